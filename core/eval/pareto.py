"""The best trade-offs between size and quality (the Pareto front), as a pure function.

A run is on the front when no other run is at least as small *and* at least as good, and
strictly better in one of the two.  Smaller size is always better; quality is better when lower
(perplexity, KL) or higher (accuracy, F1), as the caller says.

:func:`best_trade_offs` is what the History page marks "best": the front of the results *and* their
originals, keeping only results measurably smaller than their own original, so a result that is not
smaller than what it was made from, or that has no measured quality, is never called best.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _usable(value: float | None) -> bool:
    return value is not None and not math.isnan(value) and not math.isinf(value)


def pareto_front(points: Sequence[tuple[float | None, float | None]], higher_is_better: bool = False) -> list[int]:
    """Indices of the Pareto-optimal ``(size, quality)`` points, ordered by increasing size.

    Points with a missing (None/NaN/inf) coordinate are never on the front.  Exact duplicates of
    an optimal point are all kept (neither dominates the other).  O(n log n).
    """
    sign = -1.0 if higher_is_better else 1.0  # turn "higher is better" into "lower is better"
    candidates = sorted(
        ((float(size), sign * float(quality), index) for index, (size, quality) in enumerate(points)
         if _usable(size) and _usable(quality)),
        key=lambda item: (item[0], item[1]))
    front: list[int] = []
    best = math.inf  # the best (lowest) quality cost among strictly smaller sizes seen so far
    position = 0
    while position < len(candidates):
        size = candidates[position][0]
        group_end = position
        while group_end < len(candidates) and candidates[group_end][0] == size:
            group_end += 1
        group = candidates[position:group_end]  # same size, sorted by cost
        lowest = group[0][1]
        if lowest < best:  # not dominated by a smaller point; only the best of this size survive
            front.extend(index for _, cost, index in group if cost == lowest)
            best = lowest
        position = group_end
    return front


def dominates(a: tuple[float, float], b: tuple[float, float], higher_is_better: bool = False) -> bool:
    """Whether point ``a`` is at least as good as ``b`` on both axes and strictly better on one."""
    sign = -1.0 if higher_is_better else 1.0
    size_a, cost_a = a[0], sign * a[1]
    size_b, cost_b = b[0], sign * b[1]
    return size_a <= size_b and cost_a <= cost_b and (size_a < size_b or cost_a < cost_b)


def best_trade_offs(points: Sequence[tuple[float | None, float | None]],
                    originals: Sequence[tuple[float | None, float | None]],
                    higher_is_better: bool = False, same_size: float = 0.0) -> list[int]:
    """Indices of the results that are best trade-offs measured against their original, by increasing size.

    ``points[i]`` is result i's (size, quality); ``originals[i]`` its own original's (size it is compared
    with, quality), measured before that run.  A result is a best trade-off only when

    * its size and quality were measured, and so were its original's;
    * it is smaller than its original by more than ``same_size`` (a share: 0.005 = half a percent), so a
      result that is not smaller, however good, is never best;
    * nothing dominates it: no other result and no original is at least as small and at least as good
      and strictly better in one of the two (:func:`pareto_front` over results and originals together).
    """
    if len(points) != len(originals):
        raise ValueError("every result needs its original (None values where it was not measured)")
    front = set(pareto_front([*points, *originals], higher_is_better))
    best = []
    for index, ((size, quality), (original, original_quality)) in enumerate(zip(points, originals, strict=True)):
        if not (_usable(size) and _usable(quality) and _usable(original) and _usable(original_quality)):
            continue
        if index in front and float(size) < float(original) * (1 - same_size):
            best.append(index)
    return sorted(best, key=lambda i: (float(points[i][0]), i))
