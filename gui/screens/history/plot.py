"""The size-vs-quality scatter of finished runs, with the original and the best trade-offs joined up.

Every finished run with both numbers is a point.  Each model's original is a grey diamond, at the
size its results are compared with (a 4-bit GGUF source at its size as a 16-bit model, the format
results are saved in; ``core.eval.size_baseline``) and the quality measured before the run.  The best
trade-offs (``core.eval.pareto.best_trade_offs``: smaller than their original, and no run nor original
both smaller and better) are drawn larger, in another colour, labelled with their run number and
connected in order of size.  Hovering a point
names its run; clicking one selects that run in the table (``run_clicked``).  When the quality
values of the plotted runs span more than a factor of ``LOG_SPAN`` (one broken run at perplexity
10,000 beside good ones near 20), the quality axis turns logarithmic so the good runs stay apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from core.eval.pareto import best_trade_offs
from core.eval.size_baseline import SAME_SIZE, OriginalSize, is_smaller
from gui.screens.history.style import (
    SIZE_KEY,
    Quality,
    format_metric,
    original_quality,
    original_size,
    original_size_words,
    quality_note,
    short_source,
)
from gui.widgets.axes import padded_range, rounded_axes

POINT_COLOUR = "#5b8cc0"
FRONT_COLOUR = "#e67e22"
SELECTED_COLOUR = "#d62728"
ORIGINAL_COLOUR = "#555555"
LOG_SPAN = 10.0  # max/min of the plotted quality above which its axis is logarithmic
# Each axis spans at least this share of its largest value: runs with equal numbers are not zoomed onto
# rounding noise (labels like 18.00699999956), and close ones do not look far apart.
MIN_SPAN_FRACTION = 0.1


class HistoryPlot(QWidget):
    run_clicked = Signal(int)  # a run id

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.widget = pg.PlotWidget(background=None, axisItems=rounded_axes())
        self.widget.showGrid(x=True, y=True, alpha=0.2)
        self.widget.setMenuEnabled(False)
        self.widget.setMinimumHeight(220)
        for axis in ("left", "bottom"):
            self.widget.getAxis(axis).enableAutoSIPrefix(False)
        self.widget.setLabel("bottom", "Size on disk (MB)")
        self.widget.setToolTip("Each point is a finished run: size on disk across, quality up. The grey diamond is "
                               "the original model, at the size results are compared with. The orange points "
                               "joined by a line are the best trade-offs: smaller than the original, and no other "
                               "run, nor the original, is both smaller and better. Hover a point to see its run; "
                               "click it to select the run.")
        self.front_line = self.widget.plot([], [], pen=pg.mkPen(FRONT_COLOUR, width=2))
        self.points = pg.ScatterPlotItem(size=9, pen=pg.mkPen(None), brush=pg.mkBrush(POINT_COLOUR),
                                         hoverable=True, hoverSize=13, tip=self._tip)
        self.front = pg.ScatterPlotItem(size=13, pen=pg.mkPen("w", width=1), brush=pg.mkBrush(FRONT_COLOUR),
                                        hoverable=True, hoverSize=16, tip=self._tip)
        self.original = pg.ScatterPlotItem(size=15, symbol="d", pen=pg.mkPen("w", width=1),
                                           brush=pg.mkBrush(ORIGINAL_COLOUR), hoverable=True, hoverSize=18,
                                           tip=self._original_tip)
        self.selected = pg.ScatterPlotItem(size=20, pen=pg.mkPen(SELECTED_COLOUR, width=2), brush=pg.mkBrush(None))
        for item in (self.points, self.front, self.original, self.selected):
            self.widget.addItem(item)
        self.points.sigClicked.connect(self._clicked)
        self.front.sigClicked.connect(self._clicked)
        self.labels: list[pg.TextItem] = []
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setToolTip("A run is a best trade-off only when it is smaller than its original and no other run, "
                             "nor an original, is both smaller and better.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.widget, 1)
        layout.addWidget(self.note)
        self.records: dict[int, Any] = {}
        self.front_ids: list[int] = []
        self.originals: list[OriginalPoint] = []
        self.quality: Quality | None = None
        self.log_y = False

    def _y(self, value: float) -> float:
        """The plotted y of a quality value: log10 of it on a logarithmic axis (the axis labels 10^y)."""
        return float(np.log10(value)) if self.log_y else float(value)

    # -- data --------------------------------------------------------------------------------------
    def set_runs(self, records: list[Any], quality: Quality) -> list[int]:
        """Plot the finished runs that have a size and ``quality``, and each model's original; return the
        ids of the runs that are best trade-offs against their original (``core.eval.pareto.best_trade_offs``)."""
        self.quality = quality
        usable = [r for r in records if r.status == "done"
                  and r.metric(SIZE_KEY) is not None and r.metric(quality.key) is not None]
        self.records = {r.id: r for r in usable}
        xs = np.array([r.metric(SIZE_KEY) / 1e6 for r in usable], dtype=float)
        values = np.array([r.metric(quality.key) for r in usable], dtype=float)
        own_originals = [_original_point(r, quality) for r in usable]
        best = best_trade_offs(list(zip(xs.tolist(), values.tolist(), strict=True)), own_originals,
                               quality.higher_is_better, SAME_SIZE)
        self.originals = _plotted_originals(usable, quality)
        ox = np.array([o.size / 1e6 for o in self.originals], dtype=float)
        ov = np.array([o.value for o in self.originals], dtype=float)
        every = np.concatenate([values, ov])
        self.log_y = bool(len(every)) and float(every.min()) > 0 and float(every.max() / every.min()) > LOG_SPAN
        self.widget.getAxis("left").setLogMode(False, self.log_y)
        ys = np.log10(values) if self.log_y else values
        oy = np.log10(ov) if self.log_y else ov
        self.front_ids = [usable[i].id for i in best]
        others = [i for i in range(len(usable)) if i not in set(best)]
        self.points.setData(x=xs[others], y=ys[others], data=[usable[i].id for i in others])
        self.front.setData(x=xs[best], y=ys[best], data=self.front_ids)
        self.original.setData(x=ox, y=oy, data=list(range(len(self.originals))))
        self.front_line.setData(*self._front_line(xs[best], ys[best], ox, oy, values[best], ov))
        for label in self.labels:
            self.widget.removeItem(label)
        self.labels = []
        at_point: dict[tuple[float, float], list[int]] = {}  # runs with identical numbers share one label
        for i in best:
            at_point.setdefault((float(xs[i]), float(ys[i])), []).append(usable[i].id)
        for (x, y), ids in at_point.items():
            self._label(", ".join(f"#{run_id}" for run_id in sorted(ids)), FRONT_COLOUR, x, y)
        for x, y in zip(ox.tolist(), oy.tolist(), strict=True):
            self._label("original", ORIGINAL_COLOUR, x, y, anchor=(1.0, -0.1))  # below, ending at the diamond
        self.widget.setLabel("left", quality.axis + (", log scale" if self.log_y else ""))
        self.note.setText(self._note(records, usable, best, quality))
        self._set_ranges(np.concatenate([xs, ox]), np.concatenate([ys, oy]))
        return self.front_ids

    def _label(self, text: str, colour: str, x: float, y: float, anchor: tuple[float, float] = (0, 1.1)) -> None:
        label = pg.TextItem(text, color=colour, anchor=anchor)
        label.setPos(x, y)
        self.widget.addItem(label)
        self.labels.append(label)

    def _front_line(self, bx: np.ndarray, by: np.ndarray, ox: np.ndarray, oy: np.ndarray, bv: np.ndarray,
                    ov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The best runs joined in order of size, with each original that no best run beats (smaller and better)."""
        sign = -1.0 if self.quality is not None and self.quality.higher_is_better else 1.0
        keep = [j for j in range(len(ox))
                if not any(bx[i] <= ox[j] and sign * bv[i] <= sign * ov[j] for i in range(len(bx)))]
        x = np.concatenate([bx, ox[keep]]) if len(bx) else np.zeros(0)
        y = np.concatenate([by, oy[keep]]) if len(bx) else np.zeros(0)
        order = np.argsort(x, kind="stable")
        return x[order], y[order]

    def _note(self, records: list[Any], usable: list[Any], best: list[int], quality: Quality) -> str:
        if not usable:
            return (f"No finished run has both a size and a {quality.label.lower()} yet: the points appear "
                    "here when runs finish.")
        note = (f"{len(usable)} finished run{'s' if len(usable) != 1 else ''} plotted; "
                f"{len(best)} on the best-trade-off line (orange).")
        if self.originals:
            where = " ".join(f"{short_source(o.record.source)}: {original_size_words(o.sizes)}."
                             for o in self.originals)
            diamond = "The grey diamond is the original" if len(self.originals) == 1 else "Grey diamonds are the originals"
            note += f" {diamond}, as measured before the runs. {where}"  # the best rule is in the tooltip
        else:
            note += " The original is not drawn: these runs did not record its size and quality."
        if self.log_y:
            note += (f" The {quality.label.lower()} axis is logarithmic: the runs differ by more than "
                     f"×{LOG_SPAN:g}.")
        task_sets = {tuple(r.metrics.get("tasks") or ()) for r in usable}
        if quality.key.startswith("task_accuracy") and len(task_sets) > 1:
            note += " These runs averaged different tasks, so their accuracies are not directly comparable."
        skipped = sum(1 for r in records if r.status == "done") - len(usable)
        if skipped:
            note += f" {skipped} finished run{'s have' if skipped != 1 else ' has'} no {quality.label.lower()}."
        return note

    def _set_ranges(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """Axes around the points, never below 0 (sizes and every quality measure are ≥ 0), spanning at least
        ``MIN_SPAN_FRACTION`` of their largest value; on a log axis at least a fifth of a decade."""
        self.widget.setXRange(*padded_range(xs.tolist(), min_span_fraction=MIN_SPAN_FRACTION), padding=0)
        if self.log_y:
            low, high = padded_range(ys.tolist(), floor=None, min_span=0.2, min_span_fraction=0.0)
        else:
            low, high = padded_range(ys.tolist(), min_span_fraction=MIN_SPAN_FRACTION)
        self.widget.setYRange(low, high, padding=0)

    def set_selected(self, run_ids: list[int]) -> None:
        """Ring the points of the runs selected in the table."""
        chosen = [self.records[i] for i in run_ids if i in self.records]
        if not chosen or self.quality is None:
            self.selected.setData(x=[], y=[])
            return
        self.selected.setData(x=[r.metric(SIZE_KEY) / 1e6 for r in chosen],
                              y=[self._y(r.metric(self.quality.key)) for r in chosen])

    # -- interaction ---------------------------------------------------------------------------------
    def _tip(self, _x: float, _y: float, data: Any) -> str:
        record = self.records.get(data)
        if record is None or self.quality is None:
            return ""
        best = " — a best trade-off" if data in self.front_ids else ""
        sizes = original_size(record)
        larger = "" if sizes.compared() is None or is_smaller(record.metric(SIZE_KEY), sizes.compared()) else (
            f"\nNot smaller than its original ({original_size_words(sizes)}), so never a best trade-off.")
        return (f"Run #{record.id}: {record.recipe_name}{best}\n{short_source(record.source)}\n"
                f"{format_metric(SIZE_KEY, record.metric(SIZE_KEY))} on disk, "
                f"{self.quality.label.lower()} {format_metric(self.quality.key, record.metric(self.quality.key))}"
                + (f"\n{note}" if (note := quality_note(record, self.quality)) else "") + larger)

    def _original_tip(self, _x: float, _y: float, data: Any) -> str:
        if self.quality is None or not isinstance(data, int | np.integer) or not 0 <= data < len(self.originals):
            return ""
        point = self.originals[int(data)]
        return (f"The original model: {short_source(point.record.source)}\n{point.record.source}\n"
                f"{original_size_words(point.sizes)}, {self.quality.label.lower()} "
                f"{format_metric(self.quality.key, point.value)}\nMeasured before run #{point.record.id}; results "
                "are best trade-offs only when smaller than this.")

    def _clicked(self, _item: Any, points: Any, *_args: Any) -> None:
        if len(points):
            self.run_clicked.emit(int(points[0].data()))


@dataclass(frozen=True)
class OriginalPoint:
    """A model's original on the plot: its compared size and quality, as measured before ``record``'s run."""

    record: Any
    sizes: OriginalSize
    size: float
    value: float


def _original_point(record: Any, quality: Quality) -> tuple[float | None, float | None]:
    """(compared size in MB, quality) of the original ``record``'s run started from (None where not measured)."""
    size = original_size(record).compared()
    return (size / 1e6 if size is not None else None, original_quality(record, quality))


def _plotted_originals(records: list[Any], quality: Quality) -> list[OriginalPoint]:
    """One point per model: its original as measured before the newest of these runs that measured it."""
    points: dict[str, OriginalPoint] = {}
    for record in sorted(records, key=lambda r: r.id, reverse=True):
        sizes = original_size(record)
        size, value = sizes.compared(), original_quality(record, quality)
        if record.source not in points and size is not None and value is not None:
            points[record.source] = OriginalPoint(record, sizes, size, value)
    return list(points.values())
