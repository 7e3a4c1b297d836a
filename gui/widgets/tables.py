"""A read-only table of measured numbers: no editing, no selection, headers sized to their contents."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QWidget


class ReadOnlyTable(QTableWidget):
    """A table for showing numbers: wrapped text, no row numbers, one column stretched to fill the width."""

    def __init__(self, headers: Sequence[str], stretch_column: int, parent: QWidget | None = None):
        super().__init__(0, len(headers), parent)
        self.setHorizontalHeaderLabels(list(headers))
        self.verticalHeader().hide()
        self.setWordWrap(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.horizontalHeader()
        for column in range(len(headers)):
            mode = QHeaderView.ResizeMode.Stretch if column == stretch_column else QHeaderView.ResizeMode.ResizeToContents
            header.setSectionResizeMode(column, mode)
