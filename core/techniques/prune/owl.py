"""OWL: outlier-weighted layerwise sparsity (Yin et al., 2024), as pure functions.

Blocks whose Wanda scores ``|W_ij| · ‖X_j‖`` have more outliers matter more, so they are pruned
less.  For each block (all its target Linears together) the outlier ratio is the share of
scores above ``m`` times the block's mean score (m = 5 in the paper).  As in the reference code,
the ratios are min-max scaled to [0, 2λ] and each block's density is ``1 - target`` plus its
scaled ratio minus their mean, i.e.

    sparsity_l = target - (s_l - mean(s)),   s_l = 2λ · (r_l - min r) / (max r - min r)

so the mean sparsity is exactly the target and the most outlier-rich block is pruned least.
The paper states every block lies within [target - λ, target + λ]; the reference formula alone
can overshoot that bound when the ratios are skewed (one block far from the rest), so here the
deviations are shrunk by one common factor when needed, which keeps the mean, the order and the
bound.  The bound is also narrowed so that no block goes below 0 or above ``max_sparsity``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

DEFAULT_M = 5.0
DEFAULT_LAMBDA = 0.08  # the paper's value for LLaMA at 70% sparsity


def outlier_count(weight: torch.Tensor, input_norms: torch.Tensor, threshold: float) -> int:
    """How many Wanda scores ``|W| · ‖X_j‖`` of one Linear exceed ``threshold``."""
    scores = weight.detach().abs().to(torch.float32) * input_norms.to(weight.device, torch.float32).reshape(1, -1)
    return int((scores > threshold).sum())


def wanda_score_sum(weight: torch.Tensor, input_norms: torch.Tensor) -> float:
    """Sum of the Wanda scores of one Linear (for a block-wide mean)."""
    norms = input_norms.to(weight.device, torch.float32)
    return float((weight.detach().abs().to(torch.float32).sum(dim=0) * norms).sum())


def outlier_ratio(weights: Sequence[torch.Tensor] | torch.Tensor,
                  input_norms: Sequence[torch.Tensor] | torch.Tensor, m: float = DEFAULT_M) -> float:
    """Share of the Wanda scores of one block's Linears above ``m`` × their mean (0..1).

    ``weights`` are the block's Linear weights [out, in] and ``input_norms`` the matching ‖X_j‖
    [in] (one weight and one norm vector are accepted too).  All scores of the block are pooled,
    as in the reference implementation.
    """
    if isinstance(weights, torch.Tensor):
        weights, input_norms = [weights], [input_norms]
    weights, input_norms = list(weights), list(input_norms)
    if len(weights) != len(input_norms) or not weights:
        raise ValueError("outlier_ratio needs one input-norm vector per weight, and at least one weight")
    total = sum(w.numel() for w in weights)
    mean = sum(wanda_score_sum(w, n) for w, n in zip(weights, input_norms, strict=True)) / total
    outliers = sum(outlier_count(w, n, m * mean) for w, n in zip(weights, input_norms, strict=True))
    return outliers / total


def owl_layer_sparsities(outlier_ratios: Iterable[float], target: float, lambda_: float = DEFAULT_LAMBDA,
                         max_sparsity: float = 0.99) -> list[float]:
    """Per-block sparsities whose mean is ``target``: fewer outliers -> more sparsity.

    Each result lies within [target - λ, target + λ] and within [0, ``max_sparsity``]; equal
    ratios (or λ = 0) give the uniform schedule.
    """
    ratios = [float(r) for r in outlier_ratios]
    if not ratios:
        return []
    if not 0.0 <= target <= max_sparsity:
        raise ValueError(f"target sparsity {target} must lie within [0, {max_sparsity}]")
    if lambda_ < 0:
        raise ValueError(f"lambda must be ≥ 0, got {lambda_}")
    low, high = min(ratios), max(ratios)
    if high - low <= 0 or lambda_ == 0:
        return [target] * len(ratios)
    scaled = [(r - low) / (high - low) * 2 * lambda_ for r in ratios]
    mean = sum(scaled) / len(scaled)
    deviations = [mean - s for s in scaled]  # sparsity - target
    bound = min(lambda_, target, max_sparsity - target)
    largest = max(abs(d) for d in deviations)
    if largest > bound:
        deviations = [d * bound / largest for d in deviations]
    return [target + d for d in deviations]


def schedule_for_blocks(outlier_ratios: Sequence[float], target: float, schedule: str = "uniform",
                        lambda_: float = DEFAULT_LAMBDA) -> list[float]:
    """``uniform``: every block at ``target``; ``owl``: :func:`owl_layer_sparsities`."""
    if schedule == "uniform":
        return [target] * len(outlier_ratios)
    if schedule == "owl":
        return owl_layer_sparsities(outlier_ratios, target, lambda_)
    raise ValueError(f"unknown sparsity schedule {schedule!r}; choose 'uniform' or 'owl'")
