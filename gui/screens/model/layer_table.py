"""Per-layer table of a model: a sortable QAbstractTableModel over ``core.models.model_info.LayerRow``."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

# (header, tooltip, display(row), sort key(row), numeric)
COLUMNS: tuple[tuple[str, str, Any, Any, bool], ...] = (
    ("Name", "Where the layer sits in the model (its module path).",
     lambda r: r.name, lambda r: r.name, False),
    ("Kind", "The layer's type: Linear layers hold most weights; Embedding maps tokens to vectors.",
     lambda r: r.kind, lambda r: r.kind, False),
    ("Shape", "Size of the layer's main weight matrix (outputs × inputs).",
     lambda r: " × ".join(str(d) for d in r.shape), lambda r: tuple(r.shape), False),
    ("Dtype", "How each weight is stored in memory (float32, bfloat16, …).",
     lambda r: r.dtype, lambda r: r.dtype, False),
    ("Params", "Number of weights in this layer.",
     lambda r: f"{r.params:,}", lambda r: r.params, True),
    ("Sparsity", "Share of this layer's weights that are exactly zero (pruned).",
     lambda r: f"{r.sparsity:.1%}", lambda r: r.sparsity, True),
    ("Bits", "Bits of memory each weight takes, on average, in this layer.",
     lambda r: f"{r.bits:.1f}", lambda r: r.bits, True),
)


class LayerTableModel(QAbstractTableModel):
    """Rows are ``LayerRow`` objects; sorting reorders them in place."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._rows: list[Any] = []

    def set_rows(self, rows: list[Any]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def row_at(self, row: int) -> Any:
        return self._rows[row]

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        _, tooltip, display, _, numeric = COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return display(row)
        if role == Qt.ItemDataRole.TextAlignmentRole and numeric:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and index.column() == 0:
            return f"{row.name}\n{row.params:,} weights, {row.sparsity:.1%} zero, {row.bits:.1f} bits each"
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section][1] + " Click to sort."
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if not 0 <= column < len(COLUMNS):
            return
        self.layoutAboutToBeChanged.emit()
        self._rows.sort(key=COLUMNS[column][3], reverse=order == Qt.SortOrder.DescendingOrder)
        self.layoutChanged.emit()


class LayerTableView(QTableView):
    """The table widget: sortable by clicking a header, rows in model order until then."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.layer_model = LayerTableModel(self)
        self.setModel(self.layer_model)
        self.setSortingEnabled(True)
        self.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # keep model order
        self.setAlternatingRowColors(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(False)
        self.setToolTip("Every layer that holds weights. Click a column header to sort by it.")
        self._name_width = self.fontMetrics().horizontalAdvance("model.layers.0.self_attn.q_proj") + 16

    def set_rows(self, rows: list[Any]) -> None:
        self.layer_model.set_rows(rows)
        self.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.resizeColumnsToContents()  # measured once per model, not on every resize
        self._name_width = self.columnWidth(0)
        self.fit_columns()

    def fit_columns(self) -> None:
        """Spare width goes to the name column; it never gets narrower than its longest name."""
        others = sum(self.columnWidth(c) for c in range(1, len(COLUMNS)))
        self.setColumnWidth(0, max(self._name_width, self.viewport().width() - others))

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self.fit_columns()
