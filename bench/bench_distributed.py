"""One process against two (torchrun, gloo on the CPU): the same recipe gives the same model.

    .venv/bin/python bench/bench_distributed.py [--calibration-windows 8] [--windows 8] [--sequence-length 256]

For Wanda, GPTQ and a short distillation on the bundled SmolLM2-135M, the recipe runs through the command line
once on one process and once as ``torchrun --nproc_per_node 2 -m core.cli.commands run``: for Wanda and GPTQ
each of the two processes calibrates on half the windows and the statistics are all-reduced before each block
is compressed; distillation trains data-parallel (each process half of every batch, gradients averaged).  The
table gives the largest difference between the two saved models' weights (every Linear, as the model
computes with it: packed layers dequantized), the share of weights that moved by more than 1e-3, and both
perplexities.  Every process computes with one thread (torchrun's default, set for the one-process run too),
so each window's forward pass is the same arithmetic in both runs and the only difference is the order in
which the statistics (or the gradients) were summed.  Wall times are of the whole command on this 2-core shared machine (two processes share
the same two cores, so no speed-up is expected here; the point is equality).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import add_window_arguments, print_table, provenance, write_results  # noqa: E402

METHODS = {  # row name -> (technique, params); the quicker first
    "Wanda 50%": ("wanda_prune", {"sparsity": 0.5}),
    "GPTQ 4-bit g64": ("gptq_quantize", {"bits": 4, "group_size": 64, "quantize_embedding": False}),
    # data-parallel training: each process takes half of every batch of 4 windows, DDP averages the gradients
    "Distillation, 4 steps": ("distill_causal_lm", {"student": "shrink", "student_layers": 24, "max_steps": 4,
                                                   "batch_size": 4, "train_windows": 16, "validation_windows": 4,
                                                   "learning_rate": 1e-4, "schedule": "constant"}),
}


def _recipe(path: Path, technique: str, params: dict, args: argparse.Namespace) -> Path:
    path.write_text(yaml.safe_dump({
        "version": 1, "name": f"distributed {technique}", "model": {"source": "bundled:smollm2-135m"},
        "data": {"calibration": "bundled:wiki-calibration", "evaluation": "bundled:wiki-evaluation",
                 "sequence_length": args.sequence_length, "calibration_windows": args.calibration_windows},
        "evaluation": {"max_windows": args.windows, "kl_to_teacher": False},
        "steps": [{"technique": technique, "params": params}]}))
    return path


def _run(prefix: list[str], recipe: Path, out: Path, env: dict) -> float:
    started = time.perf_counter()
    command = [*prefix, "-m", "core.cli.commands", "-q", "run", str(recipe), "--out", str(out), "--device", "cpu"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    return time.perf_counter() - started


def _weights(folder: Path) -> dict:
    import torch

    from core.models.loading import load_model

    found = {}
    for name, module in load_model(str(folder)).model.named_modules():
        if hasattr(module, "dequantized_weight"):
            found[name] = module.dequantized_weight().detach().float()
        elif isinstance(module, torch.nn.Linear):
            found[name] = module.weight.detach().float()
    return found


def _perplexity(folder: Path) -> float:
    import json

    return json.loads((folder / "report.json").read_text())["after"]["perplexity"]["perplexity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_arguments(parser, calibration=8, windows=8, sequence_length=256)
    args = parser.parse_args()
    started = provenance()
    rows: list[dict] = []
    settings = {"model": "bundled:smollm2-135m", "calibration": "bundled:wiki-calibration",
                "evaluation": "bundled:wiki-evaluation", "calibration_windows": args.calibration_windows,
                "eval_windows": args.windows, "sequence_length": args.sequence_length, "processes": [1, 2],
                "backend": "gloo (CPU)", "threads_per_process": 1}
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as temp:
        temp = Path(temp)
        # the runs' history goes to a scratch home; the model cache stays the real one (converted once)
        from core import paths

        env = {**os.environ, paths.HOME_ENV: str(temp / "home"), paths.DATA_ENV: str(paths.datasets_dir()),
               paths.CACHE_ENV: str(paths.cache_dir()), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        for method, (technique, params) in METHODS.items():
            recipe = _recipe(temp / f"{technique}.yaml", technique, params, args)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            one_s = _run([sys.executable], recipe, temp / f"{technique}-1", env)
            two_s = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(port)], recipe, temp / f"{technique}-2", env)
            one, two = _weights(temp / f"{technique}-1"), _weights(temp / f"{technique}-2")
            differences = [(one[name] - two[name]).abs() for name in one]
            moved = sum(int((d > 1e-3).sum()) for d in differences) / sum(d.numel() for d in differences)
            rows.append({"method": method, "technique": technique, "params": params,
                         "max_abs_weight_difference": max(float(d.max()) for d in differences),
                         "share_moved_over_1e-3": moved, "linears": len(differences),
                         "perplexity_one": _perplexity(temp / f"{technique}-1"),
                         "perplexity_two": _perplexity(temp / f"{technique}-2"),
                         "seconds_one": one_s, "seconds_two": two_s})
            print_table(rows[-1:], [("method", "method", ""), ("max_abs_weight_difference", "max |Δw|", ".2e"),
                                    ("share_moved_over_1e-3", "moved >1e-3", ".3%"),
                                    ("perplexity_one", "ppl 1 proc", ".3f"), ("perplexity_two", "ppl 2 procs", ".3f"),
                                    ("seconds_one", "s 1 proc", ".0f"), ("seconds_two", "s 2 procs", ".0f")])
            # written after every method, so a long run that stops keeps what it measured
            settings["complete"] = len(rows) == len(METHODS)
            print(f"wrote {write_results('distributed', rows, settings, started)}")


if __name__ == "__main__":
    main()
