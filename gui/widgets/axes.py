"""Axes that do not exaggerate: rounded tick labels and ranges that are never zoomed onto noise.

pyqtgraph labels ticks with as many decimals as their spacing asks for, so an axis zoomed onto two
equal values (a span of 1e-11) read '18.00699999956', and a logarithmic axis reads '2·10¹'.
:class:`RoundedAxis` writes plain numbers with a few significant figures instead;
:func:`padded_range` gives an axis a minimum span around its values and a floor (0 for measures that
cannot be negative), so equal or nearly equal values do not look like a steep difference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pyqtgraph as pg

MAX_SIGNIFICANT = 5  # at most this many significant figures in a tick label


def _decimals(spacing: float) -> int:
    """The decimals that write the tick spacing exactly (0.25 -> 2, 0.005 -> 3, 1e-11 -> 11)."""
    if not (spacing > 0 and math.isfinite(spacing)):
        return 0
    for decimals in range(0, 16):
        if abs(round(spacing, decimals) - spacing) <= spacing * 1e-6:
            return decimals
    return 15


def tick_text(value: float, spacing: float) -> str:
    """A tick label: as many decimals as the tick spacing needs (the same for every tick of a level), at most
    ``MAX_SIGNIFICANT`` significant figures, thousands separated, no '-0'.  ``tick_text(18.00699999956, 1e-11) == '18.007'``."""
    if not math.isfinite(value):
        return ""
    decimals = _decimals(spacing)
    if value:
        digits_before_point = math.floor(math.log10(abs(value))) + 1
        decimals = min(decimals, max(0, MAX_SIGNIFICANT - digits_before_point))
    text = f"{value:,.{decimals}f}"
    return text.lstrip("-") if float(text.replace(",", "")) == 0 else text  # no '-0.0'


def plain_number(value: float) -> str:
    """A value on a logarithmic axis as people write it: 20, 300, 2,000, 0.001 (not '2·10¹')."""
    if not math.isfinite(value) or value <= 0:
        return ""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


class RoundedAxis(pg.AxisItem):
    """An axis whose tick labels are rounded (:func:`tick_text`), plain numbers in log mode too."""

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:  # noqa: N802 (Qt name)
        if self.logMode:
            return [plain_number(10 ** v * scale) for v in values]
        return [tick_text(v * scale, spacing * scale) for v in values]


def rounded_axes() -> dict[str, RoundedAxis]:
    """Left and bottom :class:`RoundedAxis` for ``pg.PlotWidget(axisItems=...)``."""
    return {"left": RoundedAxis("left"), "bottom": RoundedAxis("bottom")}


def padded_range(values: Iterable[float], *, floor: float | None = 0.0, min_span: float = 0.0,
                 min_span_fraction: float = 0.1, margin: float = 0.1) -> tuple[float, float]:
    """(low, high) of an axis that shows ``values`` without exaggerating their differences.

    The span is at least ``min_span`` and at least ``min_span_fraction`` of the largest magnitude (two runs
    at 18.007 and 18.023 share an axis from about 17 to 19, not from 18.006 to 18.024), with ``margin`` of
    it added on each side, and never below ``floor`` (None: no floor).  Empty input gives (0, 1).
    """
    numbers = [float(v) for v in values if math.isfinite(v)]
    if not numbers:
        return (0.0, 1.0) if floor is None or floor <= 0 else (floor, floor + 1.0)
    low, high = min(numbers), max(numbers)
    span = max(high - low, min_span, min_span_fraction * max(abs(low), abs(high)))
    if span <= 0:
        span = 1.0  # every value is exactly 0
    centre = (low + high) / 2
    low, high = min(low, centre - span / 2), max(high, centre + span / 2)
    pad = (high - low) * margin
    low, high = low - pad, high + pad
    if floor is not None and low < floor:
        low = floor
    return low, high
