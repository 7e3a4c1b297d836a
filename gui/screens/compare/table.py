"""The Compare page's table and bar charts: teacher against student, every number as the run measured it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QTableWidgetItem,
    QWidget,
)

from core.eval.compare import CompareRow, format_ratio, format_value
from gui.widgets.plots import make_plot
from gui.widgets.tables import ReadOnlyTable

TEACHER_BRUSH, STUDENT_BRUSH = "#7f7f7f", "#1f77b4"


class CompareTable(ReadOnlyTable):
    """Measure | Teacher | Student | Student / teacher (what each measures is the row's tooltip)."""

    HEADERS = ("Measure", "Teacher (original)", "Student (result)", "Student / teacher")

    def __init__(self, parent: QWidget | None = None):
        super().__init__(self.HEADERS, stretch_column=0, parent=parent)
        self.setToolTip("The original model (teacher) against the compressed one (student), as the run measured "
                        "them. A ratio below 1 means the student's number is smaller. Hover over a row for details.")
        self.rows: list[CompareRow] = []

    def show_rows(self, rows: list[CompareRow]) -> None:
        self.clearSpans()
        self.rows = rows
        self.setRowCount(len(rows))
        quiet = self.palette().color(QPalette.ColorRole.PlaceholderText)
        for index, row in enumerate(rows):
            better = f" {row.better.capitalize()} is better." if row.better else ""
            self._put(index, 0, row.label, row.explanation + better)
            if row.measured:
                self._put(index, 1, format_value(row.teacher, row.unit), row.explanation, numeric=True)
                self._put(index, 2, format_value(row.student, row.unit), row.explanation, numeric=True)
                self._put(index, 3, format_ratio(row.ratio), "student ÷ teacher", numeric=True)
            else:
                item = self._put(index, 1, row.missing, "This run did not measure it; nothing is estimated.")
                item.setForeground(quiet)
                self.setSpan(index, 1, 1, 3)
        self._fit_number_columns()
        self.resizeRowsToContents()

    def _fit_number_columns(self) -> None:
        """Size the number columns to their numbers and headers.  A 'not measured' sentence spans all
        three and wraps there, instead of widening the teacher's column to its full length (which
        pushed the numbers out of sight in a narrow window)."""
        metrics, header = self.fontMetrics(), self.horizontalHeader()
        for column in (1, 2, 3):
            texts = [self.item(r, column).text() for r in range(self.rowCount())
                     if self.item(r, column) is not None and self.columnSpan(r, column) == 1]
            width = max([metrics.horizontalAdvance(t) + 16 for t in texts] + [header.sectionSizeHint(column)])
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Fixed)
            header.resizeSection(column, width)

    def _put(self, row: int, column: int, text: str, tooltip: str, numeric: bool = False) -> QTableWidgetItem:
        item = QTableWidgetItem(text)
        item.setToolTip(tooltip)
        if numeric:
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.setItem(row, column, item)
        return item

    def text_at(self, label: str, column: int) -> str:
        """The text in ``column`` of the row called ``label`` (for tests and screenshots)."""
        for row in range(self.rowCount()):
            if self.item(row, 0).text() == label:
                item = self.item(row, column)
                return item.text() if item else ""
        raise KeyError(label)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self.resizeRowsToContents()


def _bars(plot: pg.PlotWidget, brush: str) -> pg.BarGraphItem:
    """An empty set of bars in ``plot``; ``show_rows`` gives it positions and heights."""
    item = pg.BarGraphItem(x=np.zeros(0), height=np.zeros(0), width=0.38, brush=brush)
    plot.addItem(item)
    return item


class CompareCharts(QWidget):
    """Two bar charts: sizes in MB (teacher and student side by side), and student / teacher ratios."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.size_plot = make_plot("Size (MB)", "MB", "", "Size on disk and in memory: grey = teacher (original), "
                                   "blue = student (result). Only measured sizes are drawn.")
        legend = self.size_plot.addLegend(offset=(10, 10))
        self.teacher_bars = _bars(self.size_plot, TEACHER_BRUSH)
        self.student_bars = _bars(self.size_plot, STUDENT_BRUSH)
        legend.addItem(self.teacher_bars, "teacher")  # the legend draws a bar's own brush
        legend.addItem(self.student_bars, "student")
        self.ratio_plot = make_plot("Ratios", "ratio", "", "Each measured number of the student divided "
                                    "by the teacher's. The red line at 1 means 'the same as the teacher'.")
        self.ratio_plot.setLabel("left", "")
        self.ratio_plot.setLabel("bottom", "student ÷ teacher")
        self.ratio_bars = pg.BarGraphItem(x0=0, y=np.zeros(0), width=np.zeros(0), height=0.6, brush=STUDENT_BRUSH)
        self.ratio_plot.addItem(self.ratio_bars)
        self.ratio_plot.getAxis("left").setWidth(72)  # room for the measure names
        self.ratio_plot.invertY(True)  # the table's order, top to bottom
        self.ratio_plot.addItem(pg.InfiniteLine(1.0, angle=90, pen=pg.mkPen("#d62728", width=1.5,
                                                                            style=Qt.PenStyle.DashLine)))
        for plot in (self.size_plot, self.ratio_plot):
            plot.setMouseEnabled(x=False, y=False)
            plot.setMinimumHeight(200)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.size_plot)
        layout.addWidget(self.ratio_plot)

    def show_rows(self, rows: list[CompareRow]) -> None:
        sizes = [r for r in rows if r.key in ("disk_mb", "memory_mb") and r.measured]
        x = np.arange(len(sizes), dtype=float)
        self.teacher_bars.setOpts(x=x - 0.2, height=np.array([r.teacher for r in sizes]))
        self.student_bars.setOpts(x=x + 0.2, height=np.array([r.student for r in sizes]))
        words = {"disk_mb": "disk", "memory_mb": "memory"}  # short: the ticks sit side by side on a narrow chart
        self.size_plot.getAxis("bottom").setTicks([[(i, words[r.key]) for i, r in enumerate(sizes)]])
        self.size_plot.setXRange(-0.6, max(len(sizes), 1) - 0.4)
        top = max([max(r.teacher, r.student) for r in sizes] or [1.0])
        self.size_plot.setYRange(0, top * 1.4)  # head room for the legend
        rated = [r for r in rows if r.ratio is not None]
        self.ratio_bars.setOpts(x0=0, y=np.arange(len(rated)), width=np.array([r.ratio for r in rated]), height=0.6)
        short = {"nonzero_parameters": "non-zero", "disk_mb": "disk", "disk_16bit_mb": "16-bit", "memory_mb": "memory",
                 "decode_tokens_per_s": "speed", "parameters": "params"}
        self.ratio_plot.getAxis("left").setTicks([[(i, short.get(r.key, r.label.lower()))
                                                   for i, r in enumerate(rated)]])
        self.ratio_plot.setYRange(-0.6, max(len(rated), 1) - 0.4)
        self.ratio_plot.setXRange(0, max([r.ratio for r in rated] + [1.0]) * 1.15)
        self.ratio_plot.setTitle("Ratios" + ("" if rated else " (none measured)"))  # short: a long title widens the plot past its widget

    def png_images(self) -> dict[str, bytes]:
        """The two charts as PNG bytes, for the HTML report."""
        images = {}
        for caption, plot in (("Size in MB: teacher (grey) and student (blue), as drawn in the app", self.size_plot),
                              ("Student / teacher for each measured number", self.ratio_plot)):
            png = plot_png(plot)
            if png:
                images[caption] = png
        return images


def plot_png(plot: pg.PlotWidget) -> bytes:
    """A plot as drawn, as PNG bytes (empty when it cannot be grabbed)."""
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    plot.grab().save(buffer, "PNG")
    buffer.close()
    return bytes(data.data())
