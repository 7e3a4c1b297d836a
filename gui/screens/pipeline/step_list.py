"""The ordered list of pipeline steps: check to switch on/off, drag to reorder, Delete to remove.

Items carry a key into ``self.steps`` (not the Step itself), so Qt's drag-and-drop never has to
copy Python objects.  The order of the steps is the order of the rows.
"""

from __future__ import annotations

import itertools
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QAbstractItemView, QListWidget, QListWidgetItem, QWidget

_keys = itertools.count(1)


class StepList(QListWidget):
    """``steps_changed`` fires after any add, remove, reorder or on/off switch."""

    steps_changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.steps: dict[int, Any] = {}  # key -> core.engine.recipe.Step
        self.titles: dict[str, str] = {}
        self.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)  # long rows end in "…"; the tooltip has all of it
        self.setToolTip("The steps run top to bottom. Tick a step to switch it on or off, drag it to "
                        "reorder, press Delete to remove the selected step.")
        self.itemChanged.connect(self._item_changed)
        self.model().rowsMoved.connect(self._rows_moved)

    def add_step(self, step: Any) -> QListWidgetItem:
        key = next(_keys)
        self.steps[key] = step
        item = QListWidgetItem()
        item.setData(Qt.ItemDataRole.UserRole, key)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsUserCheckable
                      | Qt.ItemFlag.ItemIsDragEnabled)
        self.blockSignals(True)
        item.setCheckState(Qt.CheckState.Checked if step.enabled else Qt.CheckState.Unchecked)
        self.addItem(item)
        self.blockSignals(False)
        self.refresh_labels()
        self.setCurrentItem(item)
        self.steps_changed.emit()
        return item

    def step_at(self, row: int) -> Any:
        item = self.item(row)
        return None if item is None else self.steps[item.data(Qt.ItemDataRole.UserRole)]

    def current_step(self) -> Any:
        return self.step_at(self.currentRow())

    def ordered_steps(self) -> list[Any]:
        return [self.step_at(row) for row in range(self.count())]

    def set_steps(self, steps: list[Any]) -> None:
        self.clear()
        self.steps.clear()
        for step in steps:
            self.add_step(step)
        self.steps_changed.emit()

    def remove_current(self) -> None:
        row = self.currentRow()
        if row < 0:
            return
        item = self.takeItem(row)
        self.steps.pop(item.data(Qt.ItemDataRole.UserRole), None)
        self.refresh_labels()
        self.steps_changed.emit()

    def move_current(self, delta: int) -> None:
        row = self.currentRow()
        target = row + delta
        if row < 0 or not 0 <= target < self.count():
            return
        self.blockSignals(True)
        item = self.takeItem(row)
        self.insertItem(target, item)
        self.blockSignals(False)
        self.setCurrentRow(target)
        self.refresh_labels()
        self.steps_changed.emit()

    def refresh_labels(self) -> None:
        """'1. Magnitude pruning — sparsity 0.5' for every row, in the current order."""
        self.blockSignals(True)
        for row in range(self.count()):
            step = self.step_at(row)
            title = self.titles.get(step.technique, step.technique)
            first = _headline(step.config)
            text = f"{row + 1}. {'' if step.enabled else '(off) '}{title}{f' — {first}' if first else ''}"
            self.item(row).setText(text)
            self.item(row).setToolTip(f"{text}\nTicked: this step runs. Unticked: kept in the recipe but skipped.")
        self.blockSignals(False)

    def _rows_moved(self, *_args: Any) -> None:
        """A drag moved a row (Qt moves the item itself): renumber and tell the page."""
        self.refresh_labels()
        self.steps_changed.emit()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.remove_current()
        else:
            super().keyPressEvent(event)

    def _item_changed(self, item: QListWidgetItem) -> None:
        step = self.steps.get(item.data(Qt.ItemDataRole.UserRole))
        if step is not None:
            step.enabled = item.checkState() == Qt.CheckState.Checked
            self.refresh_labels()
            self.steps_changed.emit()


def _headline(config: Any) -> str:
    """The first numeric or choice setting, e.g. 'sparsity 0.5', so the list says what each step does."""
    from core.engine.params import param_specs

    parts = []
    for spec in param_specs(type(config)):
        value = getattr(config, spec.name)
        if isinstance(value, bool) or isinstance(value, list):
            continue
        parts.append(f"{spec.label.lower()} {value:g}" if isinstance(value, float) else f"{spec.label.lower()} {value}")
        if len(parts) == 2:
            break
    return ", ".join(parts)
