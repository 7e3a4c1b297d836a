"""Measured sensitivity of each layer to truncation, for rank allocation.

For every target Linear in turn, its weight is replaced by its truncated SVD at a probe rank,
the model's loss on a few calibration windows is measured, and the weight is restored.  The
sensitivity is the loss increase.  It costs one short forward pass per layer.
"""

from __future__ import annotations

import torch
from torch import nn

from core.techniques.lowrank.factorized import svd_factors


def _loss(model: nn.Module, windows: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model(windows, labels=windows, use_cache=False).loss)


def measure_sensitivity(model: nn.Module, linears: dict[str, nn.Linear], ranks: dict[str, int | None],
                        windows: torch.Tensor, max_windows: int = 2, max_tokens: int = 128) -> dict[str, float]:
    """Loss increase per layer when that layer alone is truncated to ``ranks[name]`` (0 if kept dense).

    Uses the first ``max_windows`` calibration windows cut to ``max_tokens`` tokens.
    """
    device = next(model.parameters()).device
    probe = windows[:max_windows, :max_tokens].to(device)
    base = _loss(model, probe)
    result: dict[str, float] = {}
    for name, linear in linears.items():
        rank = ranks.get(name)
        if rank is None:
            result[name] = 0.0
            continue
        original = linear.weight.detach().clone()
        down, up = svd_factors(original, rank)
        with torch.no_grad():
            linear.weight.copy_(up @ down)
        try:
            result[name] = max(_loss(model, probe) - base, 0.0)
        finally:
            with torch.no_grad():
                linear.weight.copy_(original)
    return result
