"""Live plots of a run, throttled (ARCHITECTURE pattern 5).

Events only append numbers to numpy buffers and mark the plots dirty; a 200 ms QTimer redraws
what changed with ``setData`` / ``setOpts`` on items created once.  So a burst of thousands of
events costs a few array writes, not thousands of repaints.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QGraphicsItem, QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from gui.widgets import quality_chart
from gui.widgets.axes import rounded_axes

# 5 redraws a second: each repaints pyqtgraph axes in Python on the GUI thread, which competes with
# the worker for the GIL; at 50 ms bench/bench_ui_stall.py caught those paints in most UI stalls.
REDRAW_MS = 200
LOSS_COLOURS = {"total": "#1f77b4", "soft": "#ff7f0e", "hard": "#2ca02c"}
OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf")


class Buffer:
    """Growable x/y float arrays (amortised O(1) append)."""

    def __init__(self, capacity: int = 64):
        self._x = np.empty(capacity)
        self._y = np.empty(capacity)
        self.size = 0

    def append(self, x: float, y: float) -> None:
        if self.size == len(self._x):
            self._x = np.resize(self._x, 2 * self.size)
            self._y = np.resize(self._y, 2 * self.size)
        self._x[self.size], self._y[self.size] = x, y
        self.size += 1

    def clear(self) -> None:
        self.size = 0

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.size]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.size]


def make_plot(title: str, left: str, bottom: str, tooltip: str) -> pg.PlotWidget:
    """A plot in the app's style: titled, both axes labelled, a light grid, no context menu, plain numbers
    rounded to a few significant figures (:class:`gui.widgets.axes.RoundedAxis`)."""
    widget = pg.PlotWidget(background=None, axisItems=rounded_axes())
    widget.setTitle(title)
    widget.setLabel("left", left)
    widget.setLabel("bottom", bottom)
    widget.showGrid(x=True, y=True, alpha=0.2)
    widget.setMenuEnabled(False)
    widget.setToolTip(tooltip)
    widget.setMinimumHeight(110)  # small windows: the Run page's result gets room when a run ends
    for axis in ("left", "bottom"):
        widget.getAxis(axis).enableAutoSIPrefix(False)  # 0.5 stays 0.5, not "500 (x0.001)"
    for axis in ("left", "bottom", "top", "right"):
        # Keep each axis as a pixmap between changes: replaying its tick text took ~2 ms per axis and
        # paint, the largest part of the window's pause when the Run page appears (bench_ui_stall).
        widget.getAxis(axis).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
    return widget


class LivePlots(QWidget):
    """The Run page's four charts: loss (only for pipelines that train), non-zero parameters, quality
    (perplexity as the change from the original) and the per-layer statistic of the running step."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.loss_plot = make_plot("Loss", "loss", "training step", "Training loss of the steps that train: "
                                   "distillation, quantization-aware training (total, soft = imitating the teacher, hard = the true labels). Empty until "
                                   "a step trains.")
        self.loss_plot.addLegend(offset=(-10, 10))
        self.loss_note = pg.TextItem("No loss yet: only steps that train\n(distillation, QAT) report one.",
                                     color="#888888", anchor=(0.5, 0.5))
        self.loss_note.setPos(0.5, 0.5)
        self.loss_plot.addItem(self.loss_note)
        self.size_plot = make_plot("Non-zero parameters", "millions", "after step (0 = before)",
                                   "How many weights are not exactly zero, before the run and after each step.")
        self.quality_plot = make_plot("Quality", "change (%)", "", "Perplexity on the "
                                      "evaluation text, drawn as the change from the original in percent: 0% = as "
                                      "before, +10% = 10% more surprised by the text (worse). The axis always shows "
                                      "at least ±5%, so a tiny change looks tiny; the measured numbers are in the "
                                      "title. Classifiers show accuracy in percent (higher is better).")
        self.quality_plot.getAxis("bottom").setTicks([[(0, "before"), (1, "after")]])
        self.quality_plot.setXRange(-0.5, 1.5)
        self.layer_plot = make_plot("Per layer", "value", "layer (model order)", "One bar per layer, "
                                    "filled in as each layer is done: the share of zeros, the rank, the bits or "
                                    "the error, whichever the running step reports.")
        self.layer_note = QLabel("Layers appear here as each one is compressed.")
        self.layer_note.setWordWrap(True)
        self.layer_cell = QWidget()
        layer_box = QVBoxLayout(self.layer_cell)
        layer_box.setContentsMargins(0, 0, 0, 0)
        layer_box.addWidget(self.layer_plot, 1)
        layer_box.addWidget(self.layer_note)

        self.loss: dict[str, tuple[Buffer, pg.PlotDataItem]] = {}
        self.size = Buffer()
        self.size_curve = self.size_plot.plot(pen=pg.mkPen("#1f77b4", width=2), symbol="o", symbolSize=7,
                                              symbolBrush="#1f77b4")
        self.quality: dict[str, tuple[Buffer, pg.PlotDataItem]] = {}
        self.layer_values: dict[tuple[Any, str], dict[str, float]] = {}
        self.layer_key: tuple[Any, str] | None = None
        self.bars = pg.BarGraphItem(x=np.zeros(0), height=np.zeros(0), width=0.8, brush="#1f77b4")
        self.layer_plot.addItem(self.bars)
        self._dirty: set[str] = set()
        self.timer = QTimer(self, interval=REDRAW_MS, timeout=self.redraw)

        # The two rows share the height.  A plot's size hint follows its last size, so with the default policy the
        # row that first grew kept the space and the top row (the Loss chart's) stayed a 110-pixel strip.
        for plot in (self.loss_plot, self.size_plot, self.quality_plot, self.layer_plot):
            plot.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Ignored)
        self.grid = QGridLayout()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.grid)
        self._arrange(trains=True)

    def _arrange(self, trains: bool) -> None:
        """Lay the charts out: with the Loss chart for a pipeline that trains, without it (and no empty
        cell) for one that does not, since only training steps report a loss."""
        for widget in (self.loss_plot, self.size_plot, self.quality_plot, self.layer_cell):
            self.grid.removeWidget(widget)
        if trains:
            self.grid.addWidget(self.loss_plot, 0, 0)
            self.grid.addWidget(self.size_plot, 0, 1)
            self.grid.addWidget(self.quality_plot, 1, 0)
            self.grid.addWidget(self.layer_cell, 1, 1)
        else:
            self.grid.addWidget(self.size_plot, 0, 0)
            self.grid.addWidget(self.quality_plot, 0, 1)
            self.grid.addWidget(self.layer_cell, 1, 0, 1, 2)
        for row in (0, 1):
            self.grid.setRowStretch(row, 1)
        self.loss_plot.setVisible(trains)

    # -- lifecycle -------------------------------------------------------------------------------
    def reset(self, steps: int = 1, trains: bool = True) -> None:
        """Empty every plot for a new run of ``steps`` enabled steps; ``trains``: whether one of them trains
        (reports a loss), else the Loss chart is hidden."""
        self._arrange(trains)
        self.size_plot.setXRange(-0.5, steps + 0.5)
        self.size_plot.getAxis("bottom").setTicks([[(i, str(i)) for i in range(steps + 1)]])
        self.quality_plot.setTitle("Quality")
        label, low, high = quality_chart.axis("perplexity", [])
        self.quality_plot.setLabel("left", label)
        self.quality_plot.setYRange(low, high, padding=0)
        for buffer, _ in (*self.loss.values(), *self.quality.values()):
            buffer.clear()
        self.size.clear()
        self.layer_values.clear()
        self.layer_key = None
        self.layer_note.setText("Layers appear here as each one is compressed.")
        self._dirty = {"loss", "size", "quality", "layers"}
        self.redraw()

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        self.redraw()

    # -- events (cheap: buffers only) ------------------------------------------------------------------
    def add_event(self, event: Any) -> None:
        from core.events import LayerStat, Metric

        if isinstance(event, Metric):
            self._add_metric(event)
        elif isinstance(event, LayerStat):
            key = (event.step_index, event.name)
            self.layer_values.setdefault(key, {})[event.layer] = event.value
            self.layer_key = key
            self._dirty.add("layers")

    def _add_metric(self, metric: Any) -> None:
        name = metric.name
        if name.startswith("loss/") or name == "loss":
            part = name.split("/", 1)[1] if "/" in name else "total"
            buffer, _ = self._curve(self.loss, self.loss_plot, part, LOSS_COLOURS)
            buffer.append(metric.step if metric.step is not None else buffer.size, metric.value)
            self._dirty.add("loss")
        elif name == "nonzero_parameters/before":
            self.size.append(0, metric.value / 1e6)
            self._dirty.add("size")
        elif name == "nonzero_parameters":
            self.size.append((metric.step_index if metric.step_index is not None else self.size.size) + 1,
                             metric.value / 1e6)
            self._dirty.add("size")
        elif name.split("/")[0] in ("perplexity", "accuracy") and name.endswith(("/before", "/after")):
            kind, when = name.split("/")
            buffer, _ = self._curve(self.quality, self.quality_plot, kind, {"perplexity": "#d62728",
                                                                             "accuracy": "#2ca02c"})
            buffer.append(0 if when == "before" else 1, metric.value)
            self._dirty.add("quality")

    def _curve(self, curves: dict, plot: pg.PlotWidget, name: str, colours: dict) -> tuple[Buffer, pg.PlotDataItem]:
        if name not in curves:
            colour = colours.get(name, OTHER_COLOURS[len(curves) % len(OTHER_COLOURS)])
            item = plot.plot(name=name, pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6,
                             symbolBrush=colour)
            curves[name] = (Buffer(), item)
        return curves[name]

    # -- drawing (on the timer) ----------------------------------------------------------------------
    def redraw(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if "loss" in dirty:
            for buffer, item in self.loss.values():
                item.setData(buffer.x, buffer.y)
            self.loss_note.setVisible(not any(buffer.size for buffer, _ in self.loss.values()))
        if "size" in dirty:
            self.size_curve.setData(self.size.x, self.size.y)
        if "quality" in dirty:
            self._draw_quality()
        if "layers" in dirty:
            self._draw_layers()

    def _draw_quality(self) -> None:
        """Perplexity as the change from the original (%), accuracy in %; the measured numbers in the title."""
        parts = []
        for name, (buffer, item) in self.quality.items():
            ys = quality_chart.plotted(name, buffer.x, buffer.y)
            item.setData(buffer.x[:len(ys)], ys)
            parts.append(quality_chart.title_part(name, buffer.x, buffer.y))
            label, low, high = quality_chart.axis(name, ys)
            self.quality_plot.setLabel("left", label)
            self.quality_plot.setYRange(low, high, padding=0)
        self.quality_plot.setTitle("Quality: " + "; ".join(parts) if parts else "Quality")

    def _draw_layers(self) -> None:
        values = self.layer_values.get(self.layer_key, {}) if self.layer_key else {}
        heights = np.fromiter(values.values(), dtype=float, count=len(values))
        self.bars.setOpts(x=np.arange(len(heights)), height=heights, width=0.8)
        if self.layer_key is None:
            return
        step, stat = self.layer_key
        last_layer, last_value = next(reversed(values.items()))
        where = f" in step {step + 1}" if step is not None else ""
        self.layer_plot.setTitle(f"{stat.replace('_', ' ').capitalize()} per layer{where}")
        self.layer_plot.setLabel("left", stat.replace("_", " "))
        self.layer_note.setText(f"{len(values)} layers so far; latest {last_layer}: {last_value:.4g}")
