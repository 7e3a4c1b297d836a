"""The palette of techniques, grouped by family, that steps are added from.

Built from the registry's ``TechniqueInfo`` records, so a technique added under
``core/techniques/`` shows up with no change here.  A technique that cannot run with the chosen
device and task is greyed out and its tooltip says why.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem, QWidget

from gui.widgets.techniques_view import FAMILY_TITLES

FAMILY_HELP = {
    "quantization": "Store each weight in fewer bits: a smaller file and less memory.",
    "pruning": "Remove weights, neurons or whole layers that matter least.",
    "distillation": "Train the compressed model (student) to imitate the original (teacher).",
    "low-rank": "Replace big weight matrices by products of two thin ones.",
    "sharing": "Let several layers use the same weights.",
}


class StepPalette(QTreeWidget):
    """Double-click (or Enter) on a technique emits ``chosen(name)``."""

    chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setHeaderHidden(True)
        self.setRootIsDecorated(True)
        self.setToolTip("Compression techniques by family. Double-click one (or select it and press "
                        "Add step) to append it to the pipeline. Greyed ones cannot run here; hover for why.")
        self.techniques: dict[str, Any] = {}
        self.itemActivated.connect(self._activated)
        self.addTopLevelItem(QTreeWidgetItem(["Looking for techniques…"]))

    def show_techniques(self, techniques: dict[str, Any], device: str = "cpu", task: str = "causal-lm") -> None:
        from core.engine.registry import FAMILIES

        self.techniques = techniques
        self.clear()
        for family in FAMILIES:
            members = sorted((t for t in techniques.values() if t.family == family), key=lambda t: t.title)
            group = QTreeWidgetItem([f"{FAMILY_TITLES.get(family, family)} ({len(members)})"])
            group.setFlags(Qt.ItemFlag.ItemIsEnabled)
            group.setToolTip(0, FAMILY_HELP.get(family, "") + ("" if members else " None available yet."))
            self.addTopLevelItem(group)
            for info in members:
                item = QTreeWidgetItem([info.title])
                item.setData(0, Qt.ItemDataRole.UserRole, info.name)
                reason = info.unavailable_reason(device=device, task=task)
                needs = " Needs calibration text." if info.needs.calibration_data else ""
                if reason:
                    item.setFlags(Qt.ItemFlag.NoItemFlags)
                    item.setToolTip(0, f"Cannot run here: {reason}\n\n{info.summary}")
                else:
                    item.setToolTip(0, info.summary + needs)
                group.addChild(item)
            group.setExpanded(bool(members))

    def selected_technique(self) -> str | None:
        item = self.currentItem()
        if item is None or not item.flags() & Qt.ItemFlag.ItemIsEnabled:
            return None
        return item.data(0, Qt.ItemDataRole.UserRole)

    def item_for(self, name: str) -> QTreeWidgetItem | None:
        for row in range(self.topLevelItemCount()):
            group = self.topLevelItem(row)
            for child in range(group.childCount()):
                if group.child(child).data(0, Qt.ItemDataRole.UserRole) == name:
                    return group.child(child)
        return None

    def _activated(self, item: QTreeWidgetItem, _column: int) -> None:
        name = item.data(0, Qt.ItemDataRole.UserRole)
        if name and item.flags() & Qt.ItemFlag.ItemIsEnabled:
            self.chosen.emit(name)
