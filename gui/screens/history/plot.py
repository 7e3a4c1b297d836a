"""The size-vs-quality scatter of finished runs, with the best trade-offs (Pareto front) joined up.

Every finished run with both numbers is a point; the Pareto-optimal ones are drawn larger, in
another colour, labelled with their run number and connected in order of size.  Hovering a point
names its run; clicking one selects that run in the table (``run_clicked``).  When the quality
values of the plotted runs span more than a factor of ``LOG_SPAN`` (one broken run at perplexity
10,000 beside good ones near 20), the quality axis turns logarithmic so the good runs stay apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from core.eval.pareto import pareto_front
from gui.screens.history.style import SIZE_KEY, Quality, format_metric, quality_note, short_source
from gui.widgets.axes import padded_range, rounded_axes

POINT_COLOUR = "#5b8cc0"
FRONT_COLOUR = "#e67e22"
SELECTED_COLOUR = "#d62728"
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
        self.widget.setLabel("bottom", "Size on disk after (MB)")
        self.widget.setToolTip("Each point is a finished run: size on disk across, quality up. The orange points "
                               "joined by a line are the best trade-offs: no other run is both smaller and "
                               "better. Hover a point to see its run; click it to select the run.")
        self.front_line = self.widget.plot([], [], pen=pg.mkPen(FRONT_COLOUR, width=2))
        self.points = pg.ScatterPlotItem(size=9, pen=pg.mkPen(None), brush=pg.mkBrush(POINT_COLOUR),
                                         hoverable=True, hoverSize=13, tip=self._tip)
        self.front = pg.ScatterPlotItem(size=13, pen=pg.mkPen("w", width=1), brush=pg.mkBrush(FRONT_COLOUR),
                                        hoverable=True, hoverSize=16, tip=self._tip)
        self.selected = pg.ScatterPlotItem(size=20, pen=pg.mkPen(SELECTED_COLOUR, width=2), brush=pg.mkBrush(None))
        for item in (self.points, self.front, self.selected):
            self.widget.addItem(item)
        self.points.sigClicked.connect(self._clicked)
        self.front.sigClicked.connect(self._clicked)
        self.labels: list[pg.TextItem] = []
        self.note = QLabel()
        self.note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.widget, 1)
        layout.addWidget(self.note)
        self.records: dict[int, Any] = {}
        self.front_ids: list[int] = []
        self.quality: Quality | None = None
        self.log_y = False

    def _y(self, value: float) -> float:
        """The plotted y of a quality value: log10 of it on a logarithmic axis (the axis labels 10^y)."""
        return float(np.log10(value)) if self.log_y else float(value)

    # -- data --------------------------------------------------------------------------------------
    def set_runs(self, records: list[Any], quality: Quality) -> list[int]:
        """Plot the finished runs that have a size and ``quality``; return the Pareto-optimal run ids."""
        self.quality = quality
        usable = [r for r in records if r.status == "done"
                  and r.metric(SIZE_KEY) is not None and r.metric(quality.key) is not None]
        self.records = {r.id: r for r in usable}
        xs = np.array([r.metric(SIZE_KEY) / 1e6 for r in usable], dtype=float)
        values = np.array([r.metric(quality.key) for r in usable], dtype=float)
        front = pareto_front(list(zip(xs.tolist(), values.tolist(), strict=True)), quality.higher_is_better)
        self.log_y = bool(len(values)) and float(values.min()) > 0 and float(values.max() / values.min()) > LOG_SPAN
        self.widget.getAxis("left").setLogMode(False, self.log_y)
        ys = np.log10(values) if self.log_y else values
        self.front_ids = [usable[i].id for i in front]
        others = [i for i in range(len(usable)) if i not in set(front)]
        self.points.setData(x=xs[others], y=ys[others], data=[usable[i].id for i in others])
        self.front.setData(x=xs[front], y=ys[front], data=self.front_ids)
        self.front_line.setData(xs[front], ys[front])
        for label in self.labels:
            self.widget.removeItem(label)
        self.labels = []
        at_point: dict[tuple[float, float], list[int]] = {}  # runs with identical numbers share one label
        for i in front:
            at_point.setdefault((float(xs[i]), float(ys[i])), []).append(usable[i].id)
        for (x, y), ids in at_point.items():
            label = pg.TextItem(", ".join(f"#{run_id}" for run_id in sorted(ids)), color=FRONT_COLOUR,
                                anchor=(0, 1.1))
            label.setPos(x, y)
            self.widget.addItem(label)
            self.labels.append(label)
        self.widget.setLabel("left", quality.axis + (", log scale" if self.log_y else ""))
        skipped = sum(1 for r in records if r.status == "done") - len(usable)
        note = (f"{len(usable)} finished run{'s' if len(usable) != 1 else ''} plotted; "
                f"{len(front)} on the best-trade-off line (orange).")
        if self.log_y:
            note += (f" The {quality.label.lower()} axis is logarithmic: the runs differ by more than "
                     f"×{LOG_SPAN:g}.")
        task_sets = {tuple(r.metrics.get("tasks") or ()) for r in usable}
        if quality.key.startswith("task_accuracy") and len(task_sets) > 1:
            note += " These runs averaged different tasks, so their accuracies are not directly comparable."
        if skipped:
            note += f" {skipped} finished run{'s have' if skipped != 1 else ' has'} no {quality.label.lower()}."
        if not usable:
            note = (f"No finished run has both a size and a {quality.label.lower()} yet: the points appear "
                    "here when runs finish.")
        self.note.setText(note)
        self._set_ranges(xs, ys)
        return self.front_ids

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
        return (f"Run #{record.id}: {record.recipe_name}{best}\n{short_source(record.source)}\n"
                f"{format_metric(SIZE_KEY, record.metric(SIZE_KEY))} on disk, "
                f"{self.quality.label.lower()} {format_metric(self.quality.key, record.metric(self.quality.key))}"
                + (f"\n{note}" if (note := quality_note(record, self.quality)) else ""))

    def _clicked(self, _item: Any, points: Any, *_args: Any) -> None:
        if len(points):
            self.run_clicked.emit(int(points[0].data()))
