"""Training steps on two processes (torchrun, gloo on the CPU) train as one process does on the same batches.

Each process takes its share of every batch and DistributedDataParallel averages the gradients
(core/techniques/distill/data_parallel.py), so every optimizer step equals the one-process step up to
the order of float sums, and the saved student must equal a one-process run's.
"""

from __future__ import annotations

import pytest

from tests.helpers import run_step
from tests.test_distributed import _effective_weights, _torchrun

DISTILL = {"student": "shrink", "student_layers": 1, "max_steps": 3, "learning_rate": 3e-3, "train_windows": 8,
           "validation_windows": 2, "schedule": "constant", "weight_decay": 0.0}


@pytest.mark.parametrize("batch_size", [4, 3])  # 3: shares of 2 and 1 rows, weighted by their rows
def test_two_processes_distil_the_student_of_one(tmp_path, tiny_llama_dir, text_file, batch_size):
    params = {**DISTILL, "batch_size": batch_size}
    extra = {"data": {"calibration_windows": 10}, "evaluation": {"kl_to_teacher": False}}
    _, one = run_step(tmp_path, tiny_llama_dir, text_file, "distill_causal_lm", params, out="one", **extra)
    recipe = tmp_path / "recipe.yaml"  # the recipe run_step wrote
    result = _torchrun(["-m", "core.cli.commands", "run", str(recipe), "--out", str(tmp_path / "two"),
                        "--device", "cpu"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Training data-parallel on 2 processes" in result.stdout + result.stderr
    assert result.stdout.count("Saved") == 1  # rank 0 alone writes

    single, double = _effective_weights(tmp_path / "one"), _effective_weights(tmp_path / "two")
    original = _effective_weights(tiny_llama_dir)
    assert single.keys() == double.keys()
    for name in single:
        moved = float((single[name] - original[name]).abs().max())  # what three steps of training did
        difference = float((double[name] - single[name]).abs().max())
        assert moved > 1e-3, name
        assert difference < 1e-5, f"{name}: two processes differ from one by {difference:.2e} (training moved {moved:.2e})"
    import json

    two = json.loads((tmp_path / "two" / "report.json").read_text())
    metrics = one["steps"][0]["metrics"], two["steps"][0]["metrics"]
    assert metrics[1]["student_val_perplexity_best"] == pytest.approx(metrics[0]["student_val_perplexity_best"],
                                                                       rel=1e-5)


def test_a_batch_smaller_than_the_processes_is_refused_with_a_line(tmp_path, tiny_llama_dir, text_file):
    run_step_recipe = tmp_path / "recipe.yaml"
    from tests.helpers import write_recipe

    write_recipe(run_step_recipe, tiny_llama_dir, text_file, data={"calibration_windows": 10},
                 evaluation={"kl_to_teacher": False},
                 steps=[{"technique": "distill_causal_lm", "params": {**DISTILL, "batch_size": 1}}])
    result = _torchrun(["-m", "core.cli.commands", "run", str(run_step_recipe), "--out", str(tmp_path / "two"),
                        "--device", "cpu"])
    # torchrun says 1 when a process fails (and stops the other): the first to fail exited with 2
    assert result.returncode != 0 and "exitcode  : 2" in result.stderr, result.stderr[-2000:]
    assert "a batch of 1 cannot be shared among 2 processes: set batch_size to at least 2" in result.stderr
    assert not (tmp_path / "two").exists()
