"""Training steps on two processes (torchrun, gloo on the CPU) train as one process does on the same batches.

Each process takes its share of every batch and DistributedDataParallel averages the gradients
(core/techniques/distill/data_parallel.py), so every optimizer step equals the one-process step up to
the order of float sums, and the saved student must equal a one-process run's.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import run_step
from tests.test_distributed import _effective_weights, _torchrun

DISTILL = {"student": "shrink", "student_layers": 1, "max_steps": 3, "learning_rate": 3e-3, "train_windows": 8,
           "validation_windows": 2, "schedule": "constant", "weight_decay": 0.0}


def test_two_processes_distil_the_student_of_one(tmp_path, tiny_llama_dir, text_file):
    # batches of 3: shares of 2 and 1 rows, so the shares' weighting is tested too (an even split needs none)
    params = {**DISTILL, "batch_size": 3}
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


def test_each_share_is_weighted_by_its_rows_and_a_batch_too_small_is_refused(monkeypatch):
    """The weights that make DDP's average of the processes' mean losses the whole batch's mean."""
    from core.engine import distributed
    from core.errors import RecipeError
    from core.techniques.distill import data_parallel

    batch = torch.arange(5 * 2).reshape(5, 2)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    shares, weights = [], []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        shares.append(data_parallel.local_share({"input_ids": batch})["input_ids"])
        weights.append(data_parallel.share_weight(data_parallel.rows({"input_ids": batch})))
    assert [s[:, 0].tolist() for s in shares] == [[0, 4, 8], [2, 6]]
    # mean of the processes' weighted means == the batch's mean, for any per-row losses
    losses = torch.tensor([0.3, 1.7, 2.2, 0.1, 5.0])
    local_means = [losses[0::2].mean(), losses[1::2].mean()]
    assert float(sum(w * m for w, m in zip(weights, local_means, strict=True)) / 2) == pytest.approx(
        float(losses.mean()))
    with pytest.raises(RecipeError, match="a batch of 1 cannot be shared among 2 processes: set batch_size to at "
                                          "least 2"):
        data_parallel.share_weight(1)
