"""Pruning masks shared by the data-aware pruning techniques (pure functions, no hooks).

A mask is a boolean tensor shaped like the weight [out_features, in_features]; True keeps the
weight.  Scores say how much each weight matters: higher scores are kept.
"""

from __future__ import annotations

import torch

from core.errors import RecipeError

PATTERNS = ("unstructured", "2:4", "4:8")
PATTERN_HELP = ("unstructured: any weights in a row may go (keeps quality best). 2:4 / 4:8: in every group "
                "of 4 (or 8) consecutive input weights keep 2 (or 4), exactly 50% zeros, the pattern "
                "NVIDIA sparse tensor cores can speed up. For N:M patterns the sparsity setting is ignored.")


def parse_pattern(pattern: str) -> tuple[int, int]:
    """``"unstructured"`` -> (0, 0); ``"2:4"`` -> (2, 4).  Raises RecipeError for anything else."""
    if pattern == "unstructured":
        return 0, 0
    try:
        n_text, m_text = pattern.split(":")
        n, m = int(n_text), int(m_text)
    except (AttributeError, ValueError):
        raise RecipeError(f"pattern {pattern!r} is neither 'unstructured' nor N:M like '2:4'") from None
    if not 0 < n < m:
        raise RecipeError(f"pattern {pattern!r} must keep N of every M weights with 0 < N < M")
    return n, m


def pattern_sparsity(pattern: str, sparsity: float) -> float:
    """The share of zeros a pattern gives: ``sparsity`` if unstructured, 1 - N/M otherwise."""
    n, m = parse_pattern(pattern)
    return sparsity if m == 0 else 1.0 - n / m


def check_nm_width(in_features: int, m: int, layer: str = "this layer") -> None:
    """Raise RecipeError when rows of ``in_features`` weights cannot be split into groups of ``m``."""
    if m and in_features % m:
        raise RecipeError(f"{layer} has {in_features} inputs, which is not a multiple of {m}, so the "
                          f"N:{m} pattern cannot be applied; use 'unstructured' or ignore this layer")


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest scores in every group of ``m`` consecutive inputs of each row.

    ``scores`` is [rows, in_features]; in_features must be a multiple of ``m`` (RecipeError if not).
    """
    rows, columns = scores.shape
    check_nm_width(columns, m)
    if not 0 < n <= m:
        raise RecipeError(f"an N:M mask needs 0 < N ≤ M, got {n}:{m}")
    groups = scores.reshape(rows, columns // m, m)
    keep = torch.topk(groups, n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(rows, columns)


def row_topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per output row, drop the ``round(sparsity * in_features)`` lowest scores and keep the rest.

    Every row loses exactly the same number of weights (Wanda's comparison group); ties are broken
    by position, so the result is deterministic.
    """
    rows, columns = scores.shape
    count = round(sparsity * columns)
    mask = torch.ones(rows, columns, dtype=torch.bool, device=scores.device)
    if count > 0:
        order = torch.argsort(scores, dim=1, stable=True)
        mask.scatter_(1, order[:, :count], False)
    return mask


def zero_share(weight: torch.Tensor) -> float:
    """The share of exact zeros in ``weight``."""
    return 1.0 - int(torch.count_nonzero(weight)) / weight.numel()
