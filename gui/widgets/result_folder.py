"""Opening the output folder of an earlier run (the Compare and Export screens both offer it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QFileDialog, QPushButton, QWidget

OPEN_SHORTCUT = "Ctrl+Shift+O"


def open_result_button(parent_slot: Callable[[], Any]) -> QPushButton:
    button = QPushButton(f"Open a saved result…  ({OPEN_SHORTCUT})")
    button.setToolTip("Choose the output folder of an earlier run (it holds report.json and recipe.yaml) to "
                      "compare or export it.")
    button.clicked.connect(parent_slot)
    return button


def ask_result_folder(parent: QWidget, start: Path | None) -> Path | None:
    folder = QFileDialog.getExistingDirectory(parent, "Open the output folder of a run", str(start or Path.home()))
    return Path(folder) if folder else None
