"""Read-only list of the techniques the engine offers, grouped by family."""

from __future__ import annotations

from html import escape
from typing import Any

from PySide6.QtWidgets import QGroupBox, QScrollArea, QVBoxLayout, QWidget

from gui.widgets.labels import rich_label

FAMILY_TITLES = {"quantization": "Quantization", "pruning": "Pruning", "distillation": "Distillation",
                 "low-rank": "Low-rank", "sharing": "Layer sharing"}


def techniques_html(techniques: dict[str, Any], device: str = "cpu", task: str = "causal-lm") -> str:
    """Families in the engine's order, each with its techniques' titles and summaries."""
    from core.engine.registry import FAMILIES

    parts = []
    for family in FAMILIES:
        members = sorted((t for t in techniques.values() if t.family == family), key=lambda t: t.title)
        parts.append(f"<p style='margin-bottom:2px'><b>{escape(FAMILY_TITLES.get(family, family))}</b></p>")
        if not members:
            parts.append("<p style='margin-top:0'><i>None available yet.</i></p>")
            continue
        items = []
        for info in members:
            reason = info.unavailable_reason(device=device, task=task)
            note = f"<br><i>Cannot run here: {escape(reason)}</i>" if reason else ""
            items.append(f"<li><b>{escape(info.title)}</b> — {escape(info.summary)}{note}</li>")
        parts.append(f"<ul style='margin-top:0; margin-left:-20px'>{''.join(items)}</ul>")
    return "".join(parts)


class TechniquesBox(QGroupBox):
    def __init__(self, parent: QWidget | None = None):
        super().__init__("Available techniques", parent)
        self.setToolTip("Techniques the engine offers, by family. You will switch them on and set "
                        "them in the Pipeline step; this list is for reading only.")
        self.label = rich_label("Looking for techniques…", top_left=True)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(self.label)
        layout = QVBoxLayout(self)
        layout.addWidget(scroll)
        self._techniques: dict[str, Any] = {}

    def show_techniques(self, techniques: dict[str, Any], device: str = "cpu", task: str = "causal-lm") -> None:
        self._techniques = techniques
        self.refresh(device, task)

    def refresh(self, device: str, task: str) -> None:
        if self._techniques:
            self.label.setText(techniques_html(self._techniques, device, task))
