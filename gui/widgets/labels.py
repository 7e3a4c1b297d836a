"""Labels every screen uses: a page's title, and a wrapped rich-text label a person can select from."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel


def heading(text: str, scale: float = 1.5) -> QLabel:
    """A bold label ``scale`` times the normal font size."""
    label = QLabel(text)
    font = label.font()
    font.setPointSizeF(font.pointSizeF() * scale)
    font.setBold(True)
    label.setFont(font)
    return label


def rich_label(text: str, *, selectable: bool = True, top_left: bool = False) -> QLabel:
    """A word-wrapped rich-text label (``selectable``: the text can be copied; ``top_left``: aligned there)."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    if top_left:
        label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
    if selectable:
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label
