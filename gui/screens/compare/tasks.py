"""The Compare page's task accuracy: per task, the original against the result, with error bars.

Shown only when the run scored zero-shot tasks (``report["before"|"after"]["tasks"]``).  The rows and
the sentence come from :func:`core.eval.compare.task_rows` and :func:`core.eval.compare.task_summary`;
this widget only lays them out: a sentence, a table and a bar chart with ± one standard error and a
dashed line at the score of guessing.
"""

from __future__ import annotations

from dataclasses import replace
from html import escape
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QSplitter, QTableWidgetItem, QVBoxLayout, QWidget

from core.eval.compare import TaskRow, format_accuracy, format_points, subset_note, task_rows, task_summary
from core.eval.verdict import quality_verdict, task_measures
from gui.widgets.labels import rich_label
from gui.widgets.plots import make_plot
from gui.widgets.tables import ReadOnlyTable
from gui.widgets.verdict import verdict_html

TEACHER_BRUSH, STUDENT_BRUSH, CHANCE_PEN = "#7f7f7f", "#1f77b4", "#d62728"
BAR_WIDTH = 0.38
HEADERS = ("Task", "Questions", "Original", "Result", "Change", "Guessing")
TIPS = {
    "Task": "The zero-shot task: multiple-choice questions both models answer. Hover a task for what it asks.",
    "Questions": "How many questions were scored, of how many the task has. A random subset (the same every "
                 "run) is quicker; its error bars are wider.",
    "Original": "The original model's headline accuracy ± one standard error (percentage points).",
    "Result": "The compressed model's headline accuracy ± one standard error (percentage points).",
    "Change": "Result minus original, in percentage points.",
    "Guessing": "What picking answers at random would score: accuracy near this level means the model "
                "does not know.",
}
TASK_BASIS = ("Based on the task accuracy alone; the verdict at the top of the page also weighs perplexity and "
              "KL to the original.")


class TaskTable(ReadOnlyTable):
    """Task | Questions | Original | Result | Change | Guessing."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(HEADERS, stretch_column=0, parent=parent)
        for column, name in enumerate(HEADERS):
            self.horizontalHeaderItem(column).setToolTip(TIPS[name])
        self.setToolTip("Accuracy on each task, original against result, as the run measured it.")

    def show_rows(self, rows: list[TaskRow]) -> None:
        self.setRowCount(len(rows))
        for index, row in enumerate(rows):
            figure = "accuracy" if row.headline == "acc" else "accuracy, each answer scored per character (acc_norm)"
            about = f"{row.title}: {row.what}\nHeadline figure: {figure}.".replace(": \n", ".\n")
            near = ("\nThe original scores close to guessing here, so this task says little about the compression."
                    if row.near_chance else "")
            cells = [
                (row.title, about + near, False),
                (row.count, f"{row.subset} (a random subset)" if row.is_subset else "Every question of the task.",
                 False),
                (format_accuracy(row.teacher, row.teacher_stderr), TIPS["Original"], True),
                (format_accuracy(row.student, row.student_stderr), TIPS["Result"], True),
                (format_points(row.change), TIPS["Change"] + self._error_words(row), True),
                (f"{row.chance:.0%}" if row.chance is not None else "—", TIPS["Guessing"], True),
            ]
            for column, (text, tip, numeric) in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                if numeric:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.setItem(index, column, item)
        self.resizeRowsToContents()
        # Exactly as tall as every task needs: the page scrolls instead of hiding rows behind a scroll bar.
        rows_height = sum(self.rowHeight(r) for r in range(self.rowCount()))
        self.setFixedHeight(self.horizontalHeader().sizeHint().height() + rows_height + 2 * self.frameWidth()
                              + self.horizontalScrollBar().sizeHint().height())

    @staticmethod
    def _error_words(row: TaskRow) -> str:
        if row.within_error is None:
            return ""
        return (" Smaller than the error bars: it may be chance." if row.within_error
                else " Larger than the error bars.")

    def text_at(self, title: str, column: int) -> str:
        """The text in ``column`` of the task called ``title`` (for tests and screenshots)."""
        for row in range(self.rowCount()):
            if self.item(row, 0).text() == title:
                return self.item(row, column).text()
        raise KeyError(title)


def _percent(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else 100 * v for v in values], dtype=float)


class TaskChart(QWidget):
    """Horizontal bars per task (the table's order, top to bottom): original (grey) above result (blue),
    each ± one standard error, and a red dashed tick where guessing would score."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot = make_plot("", "", "accuracy (%)", "Each task's headline accuracy: grey = original, blue = "
                              "result. The black whiskers are ± one standard error; the red dashes mark what "
                              "guessing would score.")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMinimumHeight(200)
        self.plot.invertY(True)  # the table's order, top to bottom
        self.plot.getAxis("left").setWidth(96)  # room for the task names
        self.teacher_bars = pg.BarGraphItem(x0=0, y=np.zeros(0), width=np.zeros(0), height=BAR_WIDTH,
                                            brush=TEACHER_BRUSH)
        self.student_bars = pg.BarGraphItem(x0=0, y=np.zeros(0), width=np.zeros(0), height=BAR_WIDTH,
                                            brush=STUDENT_BRUSH)
        pen = pg.mkPen("#222222", width=1.2)
        self.teacher_errors = pg.ErrorBarItem(beam=0.12, pen=pen)  # whiskers of total width 2 x stderr
        self.student_errors = pg.ErrorBarItem(beam=0.12, pen=pen)
        self.chance = pg.PlotDataItem([], [], connect="pairs",
                                      pen=pg.mkPen(CHANCE_PEN, width=2, style=Qt.PenStyle.DashLine))
        for item in (self.teacher_bars, self.student_bars, self.teacher_errors, self.student_errors, self.chance):
            self.plot.addItem(item)
        # The key sits under the chart, never over a bar.
        self.key = rich_label(f"<span style='color:{TEACHER_BRUSH}'>■</span> original &nbsp; "
                              f"<span style='color:{STUDENT_BRUSH}'>■</span> result &nbsp; "
                              f"<span style='color:{CHANCE_PEN}'><b>¦</b></span> guessing &nbsp; "
                              "<b>├┤</b> ± one standard error", selectable=False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.key)

    def show_rows(self, rows: list[TaskRow]) -> None:
        y = np.arange(len(rows), dtype=float)
        shift = BAR_WIDTH / 2 + 0.01
        for bars, errors, values, stderrs, offset in (
                (self.teacher_bars, self.teacher_errors, [r.teacher for r in rows],
                 [r.teacher_stderr for r in rows], -shift),
                (self.student_bars, self.student_errors, [r.student for r in rows],
                 [r.student_stderr for r in rows], shift)):
            lengths = np.nan_to_num(_percent(values))
            bars.setOpts(x0=0, y=y + offset, width=lengths, height=BAR_WIDTH)
            errors.setData(x=lengths, y=y + offset, width=2 * np.nan_to_num(_percent(stderrs)))
        chance_x, chance_y = [], []
        for i, row in enumerate(rows):
            if row.chance is not None:
                chance_x += [100 * row.chance] * 2
                chance_y += [i - 0.46, i + 0.46]
        self.chance.setData(chance_x, chance_y)
        self.plot.getAxis("left").setTicks([[(i, r.title) for i, r in enumerate(rows)]])
        self.plot.setYRange(-0.6, max(len(rows), 1) - 0.4, padding=0)
        tops = [100 * ((v or 0) + (e or 0)) for r in rows for v, e in ((r.teacher, r.teacher_stderr),
                                                                       (r.student, r.student_stderr))]
        self.plot.setXRange(0, min(100.0, max(tops + [10.0]) * 1.08), padding=0)


class TaskSection(QGroupBox):
    """'Task accuracy': the sentence, the table and the chart; hidden when the run scored no task."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Task accuracy (zero-shot, scored as lm-eval scores it)", parent)
        self.setToolTip("Multiple-choice questions the original and the result both answered during the run.")
        self.verdict = rich_label("")  # the verdict on task accuracy alone; its tooltip says how it is decided
        self.sentence = rich_label("")
        self.table = TaskTable()
        self.note = rich_label("")
        self.note.setStyleSheet("color: palette(placeholder-text);")
        self.chart = TaskChart()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.verdict)
        left_layout.addWidget(self.sentence)
        left_layout.addWidget(self.table)
        left_layout.addWidget(self.note)
        left_layout.addStretch(1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.chart)
        self.splitter.setSizes([600, 400])
        self.splitter.setChildrenCollapsible(False)
        layout = QHBoxLayout(self)
        layout.addWidget(self.splitter)
        self.left = left
        self.rows: list[TaskRow] = []
        self.summary: Any = None
        self.task_verdict: Any = None

    def show_report(self, report: dict[str, Any] | None) -> None:
        """Show the tasks of a run report (hide the section when it has none)."""
        self.rows = task_rows(report) if report else []
        self.summary = task_summary(self.rows)
        self.setVisible(bool(self.rows))
        self.table.show_rows(self.rows)
        self.chart.show_rows(self.rows)
        self.note.setText(escape(subset_note(self.rows), quote=False))
        self.note.setVisible(bool(self.note.text()))
        if self.summary is None:
            self.sentence.setText("The tasks were not scored on both sides, so there is nothing to compare."
                                  if self.rows else "")
        else:
            self.sentence.setText(escape(self.summary.sentence, quote=False))
        measures = task_measures(self.rows)
        self.task_verdict = replace(quality_verdict(tasks=measures), basis=TASK_BASIS) if measures else None
        self.verdict.setVisible(self.task_verdict is not None)
        self.verdict.setText(verdict_html(self.task_verdict, "Task accuracy") if self.task_verdict else "")
        self.verdict.setToolTip(self.task_verdict.tooltip if self.task_verdict else "")
        self._fit_height()

    def _fit_height(self) -> None:
        """At least as tall as the wrapped sentence, every table row and the note need at this width
        (a splitter does not ask wrapped labels how tall they get, and would overlap them)."""
        width = max(self.left.width(), 200)
        spacing = self.left.layout().spacing()
        needed = self.sentence.heightForWidth(width) + self.table.minimumHeight() + spacing
        if self.verdict.isVisibleTo(self):
            needed += self.verdict.heightForWidth(width) + spacing
        if self.note.isVisibleTo(self):
            needed += self.note.heightForWidth(width) + spacing
        margins = self.layout().contentsMargins()
        needed += margins.top() + margins.bottom() + self.fontMetrics().height()  # the box's title
        needed = max(needed, self.chart.minimumSizeHint().height() + margins.top() + margins.bottom())
        if needed != self.minimumHeight():
            self.setMinimumHeight(needed)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._fit_height()
