"""The Compare page: the run's source model (teacher) against its result (student).

The table and charts come from the run's ``report.json``: every number was measured by the run,
and a number it did not measure says how to get it.  When the run scored zero-shot tasks, their
accuracy follows (:mod:`gui.screens.compare.tasks`); for a classifier, each class's scores
(:mod:`gui.screens.compare.classes`).  Below them the generation playground asks
both models the same prompt.  Works for the run just finished, or any saved output folder.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QScrollArea, QSplitter, QVBoxLayout, QWidget

from core.eval.compare import compare_rows, read_output_folder, size_note
from core.eval.verdict import report_verdict
from gui.errors import show_error
from gui.screens.compare.classes import ClassSection
from gui.screens.compare.playground import Playground
from gui.screens.compare.table import CompareCharts, CompareTable, plot_png
from gui.screens.compare.tasks import TaskSection
from gui.widgets.labels import heading, rich_label
from gui.widgets.result_folder import OPEN_SHORTCUT, ask_result_folder, open_result_button
from gui.widgets.verdict import verdict_html


class ComparePanel(QWidget):
    run_opened = Signal(object)  # core.eval.compare.SavedRun, when the user opens a folder here

    def __init__(self, device: Callable[[], str] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.run: Any = None
        self.open_button = open_result_button(self.open_folder)
        self.open_button.setShortcut(OPEN_SHORTCUT)
        self.title = rich_label("No result yet: run a pipeline, or open the output folder of an earlier run.")
        self.verdict = rich_label("")  # the plain quality verdict; its tooltip says how it is decided
        self.verdict.hide()
        self.table = CompareTable()
        self.charts = CompareCharts()
        self.tasks = TaskSection()
        self.classes = ClassSection()  # classifiers: each class's scores, teacher and student
        self.playground = Playground(device)

        top = QHBoxLayout()
        words = QVBoxLayout()
        words.addWidget(self.title)
        words.addWidget(self.verdict)
        top.addLayout(words, 1)
        top.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignTop)
        upper = QSplitter(Qt.Orientation.Horizontal)
        upper.addWidget(self.table)
        upper.addWidget(self.charts)
        upper.setSizes([620, 480])
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(upper)
        self.splitter.addWidget(self.tasks)
        self.splitter.addWidget(self.classes)
        self.splitter.addWidget(self.playground)
        self.splitter.setSizes([300, 300, 300, 220])
        self.splitter.setChildrenCollapsible(False)
        # The page scrolls rather than squeezing the task section and the playground in a short window.
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.splitter)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Compare"))
        layout.addLayout(top)
        layout.addWidget(self.scroll, 1)
        self.set_run(None)

    def set_run(self, run: Any) -> None:
        """Show ``run`` (a :class:`core.eval.compare.SavedRun`, or None for nothing yet)."""
        self.run = run
        rows = compare_rows(run.report) if run is not None else []
        self.table.show_rows(rows)
        self.charts.show_rows(rows)
        self.tasks.show_report(run.report if run is not None else None)
        self.classes.show_report(run.report if run is not None else None)
        self.playground.set_run(run)
        self.verdict.setVisible(run is not None)
        if run is None:
            self.title.setText("No result yet: run a pipeline, or open the output folder of an earlier run.")
            return
        report = run.report
        verdict = report_verdict(report)
        self.verdict.setText(verdict_html(verdict))
        self.verdict.setToolTip(verdict.tooltip)
        note = size_note(report)
        self.title.setText(f"<b>{escape(str(report.get('recipe', run.folder.name)))}</b> — teacher: "
                           f"{escape(run.teacher_source)}; student: {escape(str(run.folder))}<br>"
                           "Every number below was measured by the run; none is estimated."
                           + (f"<br><span style='color:#b35900'>{escape(note)}</span>" if note else ""))

    def png_images(self) -> dict[str, bytes]:
        """The page's charts as PNG bytes (caption -> image), for the HTML report."""
        images = self.charts.png_images()
        if self.tasks.rows:
            png = plot_png(self.tasks.chart.plot)
            if png:
                images["Task accuracy: original (grey) and result (blue), ± one standard error; red dashes = "
                       "guessing"] = png
        return images

    def show_folder(self, folder: str | Path) -> Any:
        """Read a run's output folder and show it; returns the SavedRun (raises StudioError if it is not one)."""
        run = read_output_folder(folder)
        self.set_run(run)
        return run

    def open_folder(self, folder: str | Path | None = None) -> Any:
        """Ask for (or take) an output folder, show it and tell the window; a bad folder becomes a dialog."""
        if folder is None or isinstance(folder, bool):  # clicked(bool) passes a bool
            folder = ask_result_folder(self, self.run.folder.parent if self.run else None)
            if folder is None:
                return None
        try:
            run = self.show_folder(folder)
        except Exception as exc:
            show_error(exc, self.window(), "Opening the result")
            return None
        self.run_opened.emit(run)
        return run

    def jobs(self) -> list[Any]:
        return [self.playground.job]
