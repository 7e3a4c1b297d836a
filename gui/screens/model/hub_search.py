"""Search the Hugging Face hub by name and pick a model (the Model page's "Search the hub…")."""

from __future__ import annotations

import html
from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.models.hub_search import HubModel, search_hub
from gui.widgets.formatting import short_count
from gui.widgets.tables import ReadOnlyTable
from gui.worker import JobHandle, call_as_job, start_job

HEADERS = ("Model", "Parameters", "Downloads (30 days)", "Likes", "Task")
EXPLANATION = ("Models on the Hugging Face hub whose name contains your words, most downloaded first. Choose one "
               "and press OK: it goes into the model box, and Load downloads it once (with a progress bar) into "
               "your Hugging Face cache. Greyed rows have no transformers weights this app can load.")


class HubSearchDialog(QDialog):
    """A query box, a results table and OK; :meth:`chosen_id` is the picked model's id."""

    def __init__(self, task: Callable[[], str], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Search the Hugging Face hub")
        self.resize(760, 480)
        self._task = task
        self.job: JobHandle | None = None
        self.models: list[HubModel] = []
        self.query = QLineEdit()
        self.query.setPlaceholderText("Part of a model's name, e.g. SmolLM2 or Qwen2.5-0.5B")
        self.query.setToolTip("Words in the model's id (owner/name). The search needs the internet.")
        self.query.returnPressed.connect(self.search)
        self.search_button = QPushButton("Search")
        self.search_button.setToolTip("Ask the hub for matching models (for the task chosen on the Model page).")
        self.search_button.clicked.connect(self.search)
        self.table = ReadOnlyTable(HEADERS, stretch_column=0)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.itemSelectionChanged.connect(self._update_ok)
        self.table.itemDoubleClicked.connect(lambda _item: self.accept() if self.chosen_id() else None)
        self.status = QLabel(EXPLANATION)
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.query, 1)
        row.addWidget(self.search_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.buttons)
        self._update_ok()

    def search(self) -> None:
        """Run the search in the background; the dialog stays responsive and shows what happened."""
        if self.job is not None and self.job.is_running():
            return
        query, task = self.query.text(), self._task()
        self.status.setText(f"Searching the hub for “{query.strip()}”…")
        self.search_button.setEnabled(False)
        handle = start_job(lambda: call_as_job(search_hub, query, task),
                           on_finished=lambda models: self._show(handle, models),
                           on_errored=lambda exc: self._failed(handle, exc))
        self.job = handle

    def _show(self, handle: JobHandle, models: list[HubModel]) -> None:
        if handle is not self.job:
            return
        self.search_button.setEnabled(True)
        self.models = list(models)
        self.table.setRowCount(len(self.models))
        for row, model in enumerate(self.models):
            cells = (model.id, short_count(model.parameters) if model.parameters else "—",
                     f"{model.downloads:,}", f"{model.likes:,}", model.task or "—")
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if not model.loadable:
                    item.setFlags(Qt.ItemFlag.NoItemFlags)
                    item.setToolTip(f"{model.id} is a {model.library} repository: this app loads transformers "
                                    "weights (or a .gguf file you download yourself).")
                elif model.gated:
                    item.setToolTip(f"{model.id} is gated: accept its licence on the hub and log in with "
                                    "`hf auth login` before loading it.")
                self.table.setItem(row, column, item)
        found = f"{len(self.models)} models found" if self.models else "No model matches those words"
        self.status.setText(f"{found}. {EXPLANATION}")
        self._update_ok()

    def _failed(self, handle: JobHandle, exc: BaseException) -> None:
        if handle is not self.job:
            return
        self.search_button.setEnabled(True)
        self.status.setText(f"<span style='color:#c0392b'>{html.escape(str(exc))}</span>")

    def chosen_id(self) -> str | None:
        """The selected loadable model's id, or None."""
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        model = self.models[rows[0].row()]
        return model.id if model.loadable else None

    def _update_ok(self) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(self.chosen_id() is not None)
