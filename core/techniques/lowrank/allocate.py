"""Choosing a rank per layer so that the target Linears lose a given share of their parameters.

A layer [m, n] at rank k costs k·(m + n) weights instead of m·n.  Every allocation here returns
``None`` for a layer that would need k ≥ m·n / (m + n), which is then kept dense (factorizing it
would save nothing), so the target is met with the cheaper of the two forms for every layer.
"""

from __future__ import annotations

import math

import torch

from core.errors import RecipeError
from core.techniques.lowrank.factorized import break_even_rank

ALLOCATIONS = ("uniform", "energy", "sensitivity")


def _rank_or_dense(k: float, m: int, n: int) -> int | None:
    k = max(1, int(math.floor(k)))
    return k if k < break_even_rank(m, n) else None


def layer_params(rank: int | None, m: int, n: int) -> int:
    """Weights of a layer [m, n] at ``rank`` (None = kept dense)."""
    return m * n if rank is None else rank * (m + n)


def uniform_ranks(shapes: dict[str, tuple[int, int]], reduction: float) -> dict[str, int | None]:
    """Every layer loses the same share: k = ⌊(1 − reduction) · m·n / (m + n)⌋."""
    return {name: _rank_or_dense((1 - reduction) * break_even_rank(m, n), m, n) for name, (m, n) in shapes.items()}


def energy_ranks(shapes: dict[str, tuple[int, int]], reduction: float,
                 spectra: dict[str, torch.Tensor]) -> dict[str, int | None]:
    """Keep, over all layers, the singular values with the most energy per weight they cost.

    Each singular value σ_j of a layer scores σ_j² / Σσ² (its share of that layer's energy)
    divided by its cost m + n; the best are kept until the budget (1 − reduction) · Σ m·n is spent.
    A layer that reaches m·n/(m+n) is kept dense at its (smaller) dense cost and the rest of the
    budget is shared again among the others.
    """
    dense: set[str] = set()
    while True:
        names = [n for n in shapes if n not in dense]
        budget = (1 - reduction) * sum(m * n for m, n in shapes.values()) - sum(
            shapes[n][0] * shapes[n][1] for n in dense)
        scores, costs, owners = [], [], []
        for index, name in enumerate(names):
            m, n = shapes[name]
            energy = spectra[name].detach().to(torch.float64).pow(2)
            share = energy / energy.sum().clamp_min(1e-300)
            scores.append(share / (m + n))
            costs.append(torch.full_like(share, float(m + n)))
            owners.append(torch.full(share.shape, index, dtype=torch.long))
        if not names:
            return {name: None for name in shapes}
        order = torch.argsort(torch.cat(scores), descending=True, stable=True)
        spent = torch.cumsum(torch.cat(costs)[order], 0)
        counts = torch.bincount(torch.cat(owners)[order][spent <= budget], minlength=len(names))
        ranks = {name: _rank_or_dense(float(counts[i]), *shapes[name]) for i, name in enumerate(names)}
        newly = {name for name, rank in ranks.items() if rank is None}
        if not newly:
            return {name: ranks.get(name) for name in shapes}
        dense |= newly


def sensitivity_ranks(shapes: dict[str, tuple[int, int]], reduction: float,
                      sensitivity: dict[str, float], power: float = 0.5) -> dict[str, int | None]:
    """Ranks that grow with measured sensitivity: k_i = f_i · m·n/(m+n), f_i = clamp(c · (s_i / mean s)^power).

    ``sensitivity`` is each layer's measured loss increase when truncated alone; ``c`` is found
    by bisection so that Σ f_i · m·n, the weights kept, meets the budget (1 − reduction) · Σ m·n.
    """
    names = list(shapes)
    values = torch.tensor([max(float(sensitivity[n]), 0.0) for n in names], dtype=torch.float64)
    values = values + 1e-6 * float(values.mean()) + 1e-12
    weights = (values / values.mean()).pow(power)
    dense = torch.tensor([m * n for m, n in (shapes[n] for n in names)], dtype=torch.float64)
    floor = torch.tensor([1 / break_even_rank(*shapes[n]) for n in names], dtype=torch.float64)
    budget = (1 - reduction) * float(dense.sum())

    def kept(c: float) -> torch.Tensor:
        return torch.minimum(torch.maximum(c * weights, floor), torch.ones_like(weights))

    low, high = 0.0, float(1 / weights.min())
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if float((kept(mid) * dense).sum()) <= budget else (low, mid)
    fractions = kept(low)
    return {name: _rank_or_dense(float(fractions[i]) * break_even_rank(*shapes[name]), *shapes[name])
            for i, name in enumerate(names)}


def allocate_ranks(shapes: dict[str, tuple[int, int]], reduction: float, method: str = "uniform", *,
                   spectra: dict[str, torch.Tensor] | None = None,
                   sensitivity: dict[str, float] | None = None) -> dict[str, int | None]:
    """Per-layer ranks (None = keep dense) removing ``reduction`` of the layers' parameters.

    ``shapes`` maps layer name to (out_features, in_features).  ``energy`` needs ``spectra``
    (each layer's singular values), ``sensitivity`` needs per-layer ``sensitivity`` scores.
    """
    if not 0 < reduction < 1:
        raise RecipeError(f"target_reduction must be between 0 and 1 (exclusive), got {reduction}")
    if method == "uniform":
        return uniform_ranks(shapes, reduction)
    if method == "energy":
        if spectra is None:
            raise RecipeError("energy allocation needs each layer's singular values")
        return energy_ranks(shapes, reduction, spectra)
    if method == "sensitivity":
        if sensitivity is None:
            raise RecipeError("sensitivity allocation needs each layer's measured sensitivity")
        return sensitivity_ranks(shapes, reduction, sensitivity)
    raise RecipeError(f"unknown allocation {method!r}; use one of {', '.join(ALLOCATIONS)}")
