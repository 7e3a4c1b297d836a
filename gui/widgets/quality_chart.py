"""What the Run page's quality chart draws: perplexity as the change from the original, accuracy in percent.

Perplexity drawn as itself on an auto-ranged axis made 18.007 -> 18.023 look like a steep climb and
pulled the axis below 0 for a broken result.  Here perplexity is the change from the original in
percent (the original is 0%) on an axis that always shows at least ±5% around no change, and never
below -100% (a perplexity of 0); accuracy is drawn in percent on a 0-100% axis.  Pure functions,
so the numbers can be checked without drawing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gui.widgets.axes import padded_range

MIN_CHANGE_PERCENT = 5.0  # the perplexity axis shows at least this much either side of "no change"


def percent_change(before: float, value: float) -> float:
    """``value`` as the change from ``before`` in percent: 18.007 -> 18.023 is +0.089."""
    return 100.0 * (value / before - 1.0)


def format_change(change: float) -> str:
    """+0.0889 -> '+0.09%', 61.2 -> '+61%', -3.456 -> '−3.46%'."""
    text = f"{change:+.2f}%" if abs(change) < 10 else f"{change:+,.0f}%"
    return text.replace("-", "−")


def _before(xs: Sequence[float], values: Sequence[float]) -> float | None:
    for x, value in zip(xs, values, strict=True):
        if x == 0 and value > 0:
            return float(value)
    return None


def plotted(kind: str, xs: Sequence[float], values: Sequence[float]) -> np.ndarray:
    """The y values drawn for measured ``values`` of ``kind`` ('perplexity' or 'accuracy') at ``xs``
    (0 = before, 1 = after).  Perplexity without a 'before' value has no change to draw: empty."""
    values = np.asarray(values, dtype=float)
    if kind == "perplexity":
        before = _before(xs, values)
        return np.zeros(0) if before is None else 100.0 * (values / before - 1.0)
    if kind == "accuracy":
        return 100.0 * values
    return values


def axis(kind: str, ys: Sequence[float]) -> tuple[str, float, float]:
    """(label, low, high) of the quality axis for the drawn values ``ys`` of ``kind``."""
    if kind == "perplexity":
        low, high = padded_range([-MIN_CHANGE_PERCENT, MIN_CHANGE_PERCENT, *ys], floor=-100.0,
                                 min_span_fraction=0.0, margin=0.05)
        return "change (%)", low, high  # short: the chart is small; the title and tooltip say of what
    if kind == "accuracy":
        return "accuracy (%)", 0.0, 102.0
    low, high = padded_range(ys)
    return kind, low, high


def title_part(kind: str, xs: Sequence[float], values: Sequence[float]) -> str:
    """The measured numbers for the chart's title: 'perplexity 18.01 → 18.02 (+0.09%)'."""
    if kind == "accuracy":
        return "accuracy " + " → ".join(f"{v:.1%}" for v in values)
    text = f"{kind} " + " → ".join(f"{v:.4g}" for v in values)
    before = _before(xs, values)
    if kind == "perplexity" and before is not None and len(values) > 1:
        text += f" ({format_change(percent_change(before, float(values[-1])))})"
    return text
