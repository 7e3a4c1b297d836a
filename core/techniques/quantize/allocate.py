"""Choosing each layer's bit width for a target average: a greedy knapsack on sensitivity per bit.

Every layer has options (bit widths), each with the storage it costs (bits, scales and zero
points included) and a sensitivity (how much worse the model gets when only that layer is
quantized at that width).  Starting from every layer's cheapest option, the allocator repeatedly
takes the upgrade — one layer to a wider option — that removes the most sensitivity per extra
stored bit, as long as the total still fits the budget ``target_bits × weights``.  Upgrades that
no longer fit are skipped, so smaller ones can still use the remaining budget.  This is the
classic greedy for the multiple-choice knapsack; exact when each layer has two options and
the upgrades are small next to the budget, and close to it otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import RecipeError


@dataclass(frozen=True)
class BitOption:
    """One way to store one layer: its bit width, stored bits in total, and its sensitivity there."""

    bits: int
    storage_bits: float
    sensitivity: float


def allocate_bits(options: dict[str, list[BitOption]], params: dict[str, int], target_bits: float
                  ) -> dict[str, int]:
    """Bit width per layer so that Σ storage / Σ params ≤ ``target_bits``, sensitivity kept low.

    ``options[name]`` lists that layer's choices; ``params[name]`` its weight count (the average
    is over weights).  Raises RecipeError, naming the reachable range, if even the cheapest choice
    for every layer is over the target.
    """
    if not options:
        raise RecipeError("no layer to allocate bits to: check the step's targets and ignore patterns")
    total_params = sum(params[name] for name in options)
    budget = target_bits * total_params
    chosen = {name: min(opts, key=lambda o: o.storage_bits) for name, opts in options.items()}
    used = sum(o.storage_bits for o in chosen.values())
    if used > budget * (1 + 1e-12):
        lowest = used / total_params
        highest = sum(max(o.storage_bits for o in opts) for opts in options.values()) / total_params
        raise RecipeError(f"target_bits {target_bits:g} is below what the lowest bit width stores here "
                          f"({lowest:.3f} bits per weight, scales included): choose a target between "
                          f"{lowest:.2f} and {highest:.2f}, or a lower low_bits / larger group size")
    while True:
        best = None
        for name, current in chosen.items():
            for option in options[name]:
                extra = option.storage_bits - current.storage_bits
                gain = current.sensitivity - option.sensitivity
                if extra <= 0 or gain <= 0 or used + extra > budget:
                    continue
                ratio = gain / extra
                if best is None or ratio > best[0]:
                    best = (ratio, name, option, extra)
        if best is None:
            break
        _, name, option, extra = best
        chosen[name] = option
        used += extra
    return {name: option.bits for name, option in chosen.items()}


def average_bits(options: dict[str, list[BitOption]], params: dict[str, int], plan: dict[str, int]) -> float:
    """Stored bits per weight of a plan (scales and zero points included)."""
    stored = sum(next(o.storage_bits for o in options[name] if o.bits == bits) for name, bits in plan.items())
    return stored / sum(params[name] for name in plan)
