"""The History page: every run kept, the best size/quality trade-offs, compare, re-run, delete.

The runs come from ``core.history.store`` (a SQLite file in the app's data folder, written by the CLI
and by this app's Run page).  Opening it marks runs whose program died mid-way as interrupted.
The page reloads when it is shown, when a run starts or ends, and every few seconds while a run
is going on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from gui.errors import show_error
from gui.screens.history.compare import RunComparison
from gui.screens.history.plot import HistoryPlot
from gui.screens.history.style import QUALITIES, best_quality, short_source
from gui.screens.history.table import RunTable
from gui.widgets.formatting import format_bytes
from gui.widgets.labels import heading

ALL_MODELS = "All models"
POLL_MS = 3000
EMPTY_TEXT = ("No runs yet — build a pipeline on the Pipeline page and press Run. Every run, finished or "
              "not, is kept here with its recipe and its numbers, so you can compare them, find the best "
              "trade-off between size and quality, and run a recipe again.")


def _button(text: str, tooltip: str, slot: Any) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tooltip)
    button.clicked.connect(slot)
    return button


def confirm_delete(parent: QWidget, records: list[Any], folders: list[tuple[Path, int]]) -> str:
    """Ask how to delete; returns "record", "files" or "cancel".  Folders are named with their sizes."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Delete runs" if len(records) > 1 else "Delete run")
    names = ", ".join(f"#{r.id}" for r in records)
    box.setText(f"Remove run {names} from the history?")
    if folders:
        listing = "\n".join(f"{path}  ({format_bytes(size)})" for path, size in folders)
        box.setInformativeText(f"The output folder{'s' if len(folders) > 1 else ''} can be deleted too:\n{listing}\n\n"
                               "Deleting files cannot be undone.")
    record_only = box.addButton("Remove from history only", QMessageBox.ButtonRole.AcceptRole)
    files = None
    if folders:
        total = format_bytes(sum(size for _, size in folders))
        files = box.addButton(f"Also delete the folder{'s' if len(folders) > 1 else ''} ({total})",
                              QMessageBox.ButtonRole.DestructiveRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.exec()
    clicked = box.clickedButton()
    if clicked is record_only:
        return "record"
    if files is not None and clicked is files:
        return "files"
    return "cancel"


class HistoryPanel(QWidget):
    rerun_requested = Signal(object)  # a core.engine.recipe.Recipe

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.history: Any = None
        self.records: list[Any] = []
        self.open_error: str | None = None
        self._poll = QTimer(self, interval=POLL_MS, timeout=self._poll_running)

        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #e67e22;")
        self.notice.setVisible(False)
        self.empty = QLabel(EMPTY_TEXT)
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setToolTip("The history fills in as you run pipelines (in the app or with compression-studio-cli).")
        self.table = RunTable()
        self.plot = HistoryPlot()
        self.comparison = RunComparison()
        self.quality_box = QComboBox()
        self.quality_box.setToolTip("Which quality measure the plot and the table show. Lower perplexity and KL "
                                    "are better; higher accuracy, F1 and average task accuracy are better. "
                                    "Average task accuracy is the mean of the zero-shot tasks' headline "
                                    "figures; runs that scored no task have none.")
        for quality in QUALITIES:
            self.quality_box.addItem(quality.axis, quality)
        self.model_box = QComboBox()
        self.model_box.setToolTip("Plot only the runs of one model. Quality numbers of different models (or "
                                  "measured on different text) are not comparable.")
        self.rerun_button = _button("Re-run", "Load the selected run's recipe into the Pipeline page and run it "
                                    "again, into a new output folder.", self.rerun_selected)
        self.open_button = _button("Open folder", "Show the selected run's output folder in your file manager.",
                                   self.open_selected)
        self.delete_button = _button("Delete…", "Remove the selected runs from the history. You will be asked "
                                     "before any output folder is deleted.", self.delete_selected)
        self.refresh_button = _button("Refresh", "Read the history again (runs from the command line appear too).",
                                      self.refresh)
        self._build_layout()
        self.table.selection_changed.connect(self._on_selection)
        self.plot.run_clicked.connect(self._on_point_clicked)
        self.quality_box.activated.connect(self._quality_picked)
        self.model_box.activated.connect(self._model_picked)
        self.open_history()

    def _build_layout(self) -> None:
        buttons = QHBoxLayout()
        for button in (self.rerun_button, self.open_button, self.delete_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.refresh_button)
        choices = QHBoxLayout()
        choices.addWidget(QLabel("Quality"))
        choices.addWidget(self.quality_box, 1)
        choices.addWidget(QLabel("Model"))
        choices.addWidget(self.model_box, 1)
        plot_group = QGroupBox("Size against quality — best trade-offs in orange")
        plot_layout = QVBoxLayout(plot_group)
        plot_layout.addLayout(choices)
        plot_layout.addWidget(self.plot, 1)
        compare_group = QGroupBox("Selected runs")
        QVBoxLayout(compare_group).addWidget(self.comparison)
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(plot_group)
        lower.addWidget(compare_group)
        lower.setSizes([520, 480])
        content = QSplitter(Qt.Orientation.Vertical)
        content.addWidget(self.table)
        content.addWidget(lower)
        content.setSizes([280, 440])
        content.setChildrenCollapsible(False)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.empty)
        self.pages.addWidget(content)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("History"))
        layout.addWidget(self.notice)
        layout.addLayout(buttons)
        layout.addWidget(self.pages, 1)

    # -- loading -----------------------------------------------------------------------------------
    def open_history(self) -> None:
        """Open the database (marking dead runs interrupted); a problem is shown on the page, not raised."""
        from core.history.store import History

        try:
            self.history = History()
            self.open_error = None
        except Exception as exc:  # a bad file or folder must not stop the app
            self.history, self.open_error = None, str(exc)
        notice = self.open_error and f"The run history cannot be opened: {self.open_error}"
        notice = notice or (self.history.notice if self.history is not None else None)
        self.notice.setText(notice or "")
        self.notice.setVisible(bool(notice))
        self.refresh()

    def refresh(self) -> None:
        """Read the runs again and redraw the table, the plot and the comparison."""
        if self.history is None:
            self.records = []
        else:
            try:
                self.records = self.history.runs()
            except Exception as exc:
                self.notice.setText(f"The run history cannot be read: {exc}")
                self.notice.setVisible(True)
                self.records = []
        self._fill_models()
        self._show()
        running = any(r.status == "running" for r in self.records)
        (self._poll.start if running and self.isVisible() else self._poll.stop)()

    def _fill_models(self) -> None:
        chosen, current = bool(self.model_box.property("chosen")), self.model_box.currentData()
        sources = list(dict.fromkeys(r.source for r in self.records if r.status == "done"))
        self.model_box.clear()
        self.model_box.addItem(ALL_MODELS, None)
        for source in sources:
            self.model_box.addItem(short_source(source), source)
            self.model_box.setItemData(self.model_box.count() - 1, source, Qt.ItemDataRole.ToolTipRole)
        index = -1
        if chosen:  # the person's choice stays while that model has runs
            index = 0 if current is None else self.model_box.findData(current)
        if index < 0:  # by default the newest finished run's model, when runs of several models exist
            index = 1 if len(sources) > 1 else 0
        self.model_box.setCurrentIndex(index)

    def _show(self) -> None:
        self.pages.setCurrentIndex(1 if self.records else 0)
        if self.history is None and self.open_error:
            self.empty.setText(f"The run history cannot be opened: {self.open_error}")
        source = self.model_box.currentData()
        plotted = [r for r in self.records if source is None or r.source == source]
        quality = self.quality_box.currentData()
        if not self._quality_chosen:
            quality = best_quality([r for r in plotted if r.status == "done"])
            self.quality_box.setCurrentIndex(QUALITIES.index(quality))
        front = self.plot.set_runs(plotted, quality)
        self.table.set_runs(self.records, quality, front)

    @property
    def _quality_chosen(self) -> bool:
        return bool(self.quality_box.property("chosen"))

    def _model_picked(self, _index: int) -> None:
        self.model_box.setProperty("chosen", True)
        self._show()

    def _quality_picked(self, _index: int) -> None:
        self.quality_box.setProperty("chosen", True)  # from now on the person's choice, not the default
        self._show()

    # -- selection ---------------------------------------------------------------------------------
    def selected(self) -> list[Any]:
        ids = self.table.selected_ids()
        return [r for r in self.records if r.id in ids]

    def _on_selection(self, ids: list[int]) -> None:
        by_id = {r.id: r for r in self.records}
        chosen = [by_id[i] for i in ids if i in by_id]
        self.comparison.show_runs(sorted(chosen, key=lambda r: r.id)[:2])  # older first: "from #a to #b"
        self.plot.set_selected(ids)
        one = chosen[0] if len(chosen) == 1 else None
        self.rerun_button.setEnabled(one is not None)
        self.open_button.setEnabled(one is not None and bool(one.output) and Path(one.output).is_dir())
        self.delete_button.setEnabled(bool(chosen) and all(r.status != "running" for r in chosen))

    def _on_point_clicked(self, run_id: int) -> None:
        from PySide6.QtWidgets import QApplication

        add = bool(QApplication.keyboardModifiers() & Qt.KeyboardModifier.ControlModifier)
        self.table.select_run(run_id, add=add)

    # -- actions -----------------------------------------------------------------------------------
    def rerun_selected(self) -> None:
        chosen = self.selected()
        if len(chosen) != 1:
            return
        try:
            recipe = chosen[0].recipe()
        except Exception as exc:
            show_error(exc, self.window(), "Reading the run's recipe")
            return
        self.rerun_requested.emit(recipe)

    def open_selected(self) -> None:
        chosen = self.selected()
        if len(chosen) == 1 and chosen[0].output and Path(chosen[0].output).is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(chosen[0].output))

    def delete_selected(self) -> None:
        """Forget the selected runs; delete their output folders only if the person confirms it."""
        from core.history.recovery import delete_output, folder_size

        chosen = [r for r in self.selected() if r.status != "running"]
        if not chosen or self.history is None:
            return
        folders = [(Path(r.output), folder_size(r.output)) for r in chosen
                   if r.status == "done" and r.output and Path(r.output).is_dir()]
        answer = confirm_delete(self.window(), chosen, folders)
        if answer == "cancel":
            return
        try:
            if answer == "files":
                for path, _size in folders:
                    delete_output(path)
            for record in chosen:
                self.history.delete(record.id)
        except Exception as exc:
            show_error(exc, self.window(), "Deleting the run")
        self.refresh()

    # -- keeping up to date ------------------------------------------------------------------------
    def _poll_running(self) -> None:
        if self.isVisible():
            self.refresh()
        else:
            self._poll.stop()

    def refresh_if_shown(self) -> None:
        """Refresh now if the page is on screen; otherwise it refreshes when shown (showEvent).

        Reading the database and redrawing costs the GUI thread ~50 ms, a visible stall at the
        start and end of every run if done for a page nobody is looking at.
        """
        if self.isVisible():
            self.refresh()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self.refresh()
