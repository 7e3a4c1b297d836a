"""One recipe on two processes (torchrun, gloo on the CPU) gives what one process gives on the same windows.

Each process calibrates on half the windows and the statistics are all-reduced before each block is
compressed (core/engine/distributed.py), so the saved weights must equal a one-process run's, up to the
order in which the float sums were added.  A process that dies mid-run makes the run fail with nothing
written.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.helpers import collect, run_step, write_recipe

REPO = Path(__file__).resolve().parents[1]
WINDOWS = 6  # an even split: 3 windows per process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(_free_port()), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _effective_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every Linear's weight as the saved model computes with it (packed layers dequantized)."""
    from core.models.loading import load_model

    model = load_model(str(folder)).model
    found = {}
    for name, module in model.named_modules():
        if hasattr(module, "dequantized_weight"):
            found[name] = module.dequantized_weight().detach().float()
        elif isinstance(module, torch.nn.Linear):
            found[name] = module.weight.detach().float()
    return found


STEPS = {
    "gptq_quantize": {"bits": 4, "group_size": 32, "symmetric": True, "quantize_embedding": False},
    "wanda_prune": {"sparsity": 0.5},
}


@pytest.mark.parametrize("technique", sorted(STEPS))
def test_two_processes_save_the_weights_of_one(tmp_path, tiny_llama_dir, text_file, technique):
    extra = {"data": {"calibration_windows": WINDOWS}, "evaluation": {"kl_to_teacher": False}}
    _, one = run_step(tmp_path, tiny_llama_dir, text_file, technique, STEPS[technique], out="one", **extra)
    recipe = tmp_path / "recipe.yaml"  # the same recipe run_step wrote
    result = _torchrun(["-m", "core.cli.commands", "-q", "run", str(recipe), "--out", str(tmp_path / "two"),
                        "--device", "cpu"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Saved") == 1  # rank 0 alone writes and prints

    original, single, double = (_effective_weights(tmp_path / name) for name in ("tiny-llama", "one", "two"))
    targets = [name for name in single if ".layers." in name]
    assert len(targets) == 14
    for name in targets:
        assert not torch.equal(single[name], original[name])  # the step did change every target
        difference = (double[name] - single[name]).abs()
        # The same mask (Wanda); the same rounding (GPTQ: the Hessian's float64 sum of each window's product
        # does not depend on which process added which window; with a float32 running mean 0.1–0.9% of a
        # layer's weights moved by a grid step, and without the all-reduce 23–45%).
        assert float(difference.max()) < 1e-5, f"{name}: max |Δ| {float(difference.max()):.2e}"
    assert torch.equal(double["lm_head"], single["lm_head"])

    # Rank 0's history row says done; the report is the one process's
    from core.history.store import History

    runs = History().runs()
    assert [r.status for r in runs if r.output == str((tmp_path / "two").resolve())] == ["done"]
    import json

    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert two["after"]["perplexity"]["perplexity"] == pytest.approx(one["after"]["perplexity"]["perplexity"],
                                                                      rel=1e-5)


_DYING_RANK = """
import os, sys
sys.path.insert(0, {repo!r})
if os.environ["RANK"] == "1":
    from core.engine import calibration
    real = calibration.all_reduce_stats
    calls = []

    def die_on_second_block(stats):
        calls.append(1)
        if any(".layers.1." in name for name in stats):
            os._exit(9)  # a killed process: no clean-up, no message to the others
        real(stats)

    calibration.all_reduce_stats = die_on_second_block
from core.cli.commands import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_rank_that_dies_fails_the_run_with_nothing_written(tmp_path, tiny_llama_dir, text_file):
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file,
                          data={"calibration_windows": WINDOWS},
                          steps=[{"technique": "wanda_prune", "params": {"sparsity": 0.5}}])
    script = tmp_path / "dying.py"
    script.write_text(textwrap.dedent(_DYING_RANK.format(repo=str(REPO))))
    out = tmp_path / "out"
    # Two processes started as torchrun starts them, without torchrun's agent (which would kill the
    # survivor): rank 0 must notice on its own and stop cleanly.
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1",
               "COMPRESSION_STUDIO_DIST_TIMEOUT": "60"}
        procs.append(subprocess.Popen([sys.executable, str(script), "-q", "run", str(recipe), "-o", str(out),
                                       "--device", "cpu"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    (_, err0), (_, _err1) = (p.communicate(timeout=240) for p in procs)
    assert procs[1].returncode == 9
    assert procs[0].returncode == 2, err0[-2000:]
    assert "another process of this run stopped" in err0 and "nothing was written" in err0
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no hidden partial folder left
    from core.history.store import History

    assert [r.status for r in History().runs() if r.output == str(out.resolve())] == ["failed"]


def test_the_engine_shares_windows_between_processes(tmp_path, tiny_llama):
    """Each process runs only its share of the windows: after the all-reduce the counts are the total."""
    windows = torch.randint(0, 300, (WINDOWS, 16))
    torch.save({"windows": windows, "state": tiny_llama.state_dict(), "config": tiny_llama.config.to_dict()},
               tmp_path / "input.pt")
    port = _free_port()
    torch.multiprocessing.spawn(_count_tokens, args=(tmp_path, port), nprocs=2, join=True)
    seen, single = _counted_importance_matrix(tiny_llama, windows)
    for rank in (0, 1):
        shared = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert shared["seen"] * 2 == seen  # each process ran only its own half of the windows
        for name, entry in single.items():
            assert shared["counts"][name] == entry.count == WINDOWS * 16
            assert torch.allclose(shared["sums"][name], torch.as_tensor(entry.sum2), rtol=1e-5)


def _count_tokens(rank: int, folder: Path, port: int) -> None:
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        data = torch.load(folder / "input.pt", weights_only=True)
        config = data["config"]
        model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k != "architectures"}))
        model.load_state_dict(data["state"])
        seen, found = _counted_importance_matrix(model.eval(), data["windows"])
        _check_each_statistic_combines(rank)
        torch.save({"seen": seen, "counts": {k: e.count for k, e in found.items()},
                    "sums": {k: torch.as_tensor(e.sum2) for k, e in found.items()}}, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _counted_importance_matrix(model, windows) -> tuple[int, dict]:
    """The importance matrix of ``windows``, and how many input rows this process folded into statistics."""
    from core.engine import calibration
    from core.engine.imatrix import iter_importance_matrix

    seen = [0]
    real_add = calibration.InputNormStats.add

    def counting_add(self, x):
        seen[0] += x.reshape(-1, x.shape[-1]).shape[0]
        real_add(self, x)

    calibration.InputNormStats.add = counting_add
    try:
        _, found = collect(iter_importance_matrix(model, windows))
    finally:
        calibration.InputNormStats.add = real_add
    return seen[0], found


def _check_each_statistic_combines(rank: int) -> None:
    """On two processes, each statistics object fed its own rows equals one fed every row, once combined."""
    from core.engine.calibration import HessianStats, InputNormStats
    from core.engine.distributed import all_reduce_stats
    from core.techniques.quantize.smooth import ChannelMaxStats

    linear = torch.nn.Linear(12, 3)
    rows = torch.Generator().manual_seed(5)
    parts = [torch.randn(7, 12, generator=rows) * 3, torch.randn(20, 12, generator=rows)]  # unequal counts
    for cls in (HessianStats, InputNormStats, ChannelMaxStats):
        alone, combined = cls(linear), cls(linear)
        for part in parts:
            alone.add(part)
        combined.add(parts[rank])
        all_reduce_stats({"a": combined, "b": combined})  # shared by two Linears: combined once
        for name in ("hessian", "sum_squares", "max", "tokens"):
            if hasattr(alone, name):
                want, got = getattr(alone, name), getattr(combined, name)
                assert torch.allclose(torch.as_tensor(got).double(), torch.as_tensor(want).double(), rtol=1e-5), (
                    cls.__name__, name)
