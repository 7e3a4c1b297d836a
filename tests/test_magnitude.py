"""Magnitude pruning: the pure mask math on a small layer, and the handler's per-layer events."""

import pytest
import torch
from torch import nn

from core.engine.recipe import Recipe
from core.engine.runner import RunContext
from core.events import LayerStat, drain
from core.techniques.prune.magnitude import (
    MagnitudePruneConfig,
    apply_magnitude_prune,
    global_threshold,
    magnitude_mask,
)
from tests.helpers import collect


def test_mask_drops_exactly_the_smallest():
    weight = torch.tensor([[0.1, -5.0, 0.3], [2.0, -0.2, 0.05]])
    mask = magnitude_mask(weight, 0.5)
    assert mask.tolist() == [[False, True, True], [True, False, False]]


def test_mask_count_and_determinism_on_linear():
    layer = nn.Linear(8, 6)
    mask = magnitude_mask(layer.weight, 0.25)
    assert int((~mask).sum()) == round(0.25 * 48)
    assert torch.equal(mask, magnitude_mask(layer.weight, 0.25))
    kept, dropped = layer.weight.abs()[mask], layer.weight.abs()[~mask]
    assert kept.min() >= dropped.max()


def test_zero_sparsity_keeps_all():
    assert magnitude_mask(torch.randn(4, 4), 0.0).all()


def test_global_threshold_spans_layers():
    small, large = torch.full((10,), 0.1), torch.full((10,), 10.0)
    threshold = global_threshold([small, large], 0.5)
    assert threshold == pytest.approx(0.1)


def test_handler_prunes_targets_not_head(tiny_llama, tiny_tokenizer):
    head_before = tiny_llama.lm_head.weight.clone()
    ctx = RunContext(Recipe(), tiny_tokenizer, "cpu")
    events, report = collect(apply_magnitude_prune(tiny_llama, MagnitudePruneConfig(sparsity=0.5), ctx))
    stats = [e for e in events if isinstance(e, LayerStat)]
    assert len(stats) == 14  # 2 layers x 7 Linears
    assert all(abs(s.value - 0.5) < 1e-3 for s in stats)
    assert torch.equal(tiny_llama.lm_head.weight, head_before)
    assert abs(report.metrics["sparsity"] - 0.5) < 1e-3 and report.notes


def test_global_scope_reaches_target_overall(tiny_llama, tiny_tokenizer):
    report = drain(apply_magnitude_prune(tiny_llama, MagnitudePruneConfig(sparsity=0.3, scope="global"),
                                         RunContext(Recipe(), tiny_tokenizer, "cpu")))
    assert abs(report.metrics["sparsity"] - 0.3) < 0.01
    per_layer = {row["sparsity"] for row in report.layers}
    assert len(per_layer) > 1  # layers lose different shares under one global threshold
