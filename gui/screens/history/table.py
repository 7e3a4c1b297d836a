"""The table of runs, newest first: when, status (colour and words), recipe, model, a plain quality verdict
(:mod:`core.eval.verdict`), size and quality."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from core.eval.verdict import THRESHOLDS, metrics_verdict
from gui.screens.history.style import (
    SIZE_KEY,
    Quality,
    format_metric,
    local_time,
    quality_note,
    short_source,
    status_text,
)
from gui.widgets.verdict import level_colour

COLUMNS = ("#", "Started", "Status", "Best", "Recipe", "Model", "Steps", "Quality", "Size after", "Quality after",
           "Output")
TIPS = {
    "#": "The run's number in the history.",
    "Started": "When the run started (your local time).",
    "Status": "Done, failed, cancelled, interrupted (the program stopped mid-run) or running.",
    "Best": "★ marks the best trade-offs: no other finished run is both smaller and better.",
    "Recipe": "The recipe's name; re-run it to load the same steps again.",
    "Model": "The model that was compressed.",
    "Steps": "The techniques the recipe applied, in order.",
    "Quality": "A plain verdict on the result's quality against the original: better, nearly unchanged, "
               "noticeably worse or broken. Hover a run's verdict for the numbers that decided it.\n\n" + THRESHOLDS,
    "Size after": "Bytes of the saved weight files.",
    "Quality after": "The quality measure chosen above the plot, after compression.",
    "Output": "The folder the compressed model was saved to.",
}
RUN_ID_ROLE = Qt.ItemDataRole.UserRole


class RunTable(QTableWidget):
    selection_changed = Signal(list)  # the selected run ids, in table order

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        for column, name in enumerate(COLUMNS):
            self.horizontalHeaderItem(column).setToolTip(TIPS[name])
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.verticalHeader().setVisible(False)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("Output"), QHeaderView.ResizeMode.Stretch)
        self.setToolTip("Every run, newest first. Click a run to see its numbers; Ctrl+click a second one to "
                        "compare the two side by side.")
        self.itemSelectionChanged.connect(lambda: self.selection_changed.emit(self.selected_ids()))

    def set_runs(self, records: list[Any], quality: Quality, front_ids: list[int]) -> None:
        """Fill the table (keeping the selection of runs that are still there)."""
        keep = set(self.selected_ids())
        self.blockSignals(True)
        self.setHorizontalHeaderItem(COLUMNS.index("Quality after"), QTableWidgetItem(f"{quality.label} after"))
        self.horizontalHeaderItem(COLUMNS.index("Quality after")).setToolTip(quality.axis + ", after compression.")
        self.setRowCount(len(records))
        front = set(front_ids)
        for row, record in enumerate(records):
            words, colour, explanation = status_text(record.status)
            status_tip = explanation + (f"\n\n{record.message}" if record.message else "")
            verdict = metrics_verdict(record.metrics) if record.status == "done" else None
            cells = [
                (str(record.id), ""),
                (local_time(record.started), f"Started {record.started}\nFinished {record.finished or '—'}"),
                (f"●  {words}", status_tip),
                ("★" if record.id in front else "", TIPS["Best"] if record.id in front else ""),
                (record.recipe_name, ""),
                (short_source(record.source), record.source),
                (", ".join(record.metrics.get("steps", [])) or "—", ""),
                (verdict.level, verdict.tooltip) if verdict else ("—", "No result to judge: the run did not finish."),
                (format_metric(SIZE_KEY, record.metric(SIZE_KEY)), ""),
                (format_metric(quality.key, record.metric(quality.key)), quality_note(record, quality)),
                (record.output, record.output),
            ]
            for column, (text, tip) in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(RUN_ID_ROLE, record.id)
                item.setToolTip(tip or TIPS[COLUMNS[column]])
                if column == COLUMNS.index("Status"):
                    item.setForeground(QBrush(QColor(colour)))
                if column == COLUMNS.index("Quality") and verdict:
                    item.setForeground(QBrush(QColor(level_colour(verdict))))
                if column == COLUMNS.index("Best") and text:
                    item.setForeground(QBrush(QColor("#e67e22")))
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.setItem(row, column, item)
        self.clearSelection()
        for row, record in enumerate(records):
            if record.id in keep:
                self._select_row(row)
        self.blockSignals(False)
        self.selection_changed.emit(self.selected_ids())

    def _select_row(self, row: int) -> None:
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        self.selectionModel().select(self.model().index(row, 0), flags)

    def selected_ids(self) -> list[int]:
        rows = sorted({index.row() for index in self.selectionModel().selectedRows()})
        return [int(self.item(row, 0).data(RUN_ID_ROLE)) for row in rows if self.item(row, 0) is not None]

    def select_run(self, run_id: int, add: bool = False) -> None:
        """Select the row of ``run_id`` (``add``: keep the other selected rows)."""
        for row in range(self.rowCount()):
            if int(self.item(row, 0).data(RUN_ID_ROLE)) == run_id:
                if not add:
                    self.clearSelection()
                self._select_row(row)
                self.scrollToItem(self.item(row, 0))
                return
