"""Keyboard shortcuts of the main window (window-wide, so they work from any page).

Ctrl+R run the pipeline · Esc cancel the run · Ctrl+O open a model folder · Ctrl+S save the recipe ·
Ctrl+1 … Ctrl+6 show Model, Pipeline, Run, Compare, History, Export.  Page buttons carry their own
(Ctrl+G generate, Ctrl+E export GGUF, Ctrl+Shift+O open a saved result, …).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut

SHORTCUTS = {
    "Ctrl+R": "Run the pipeline",
    "Esc": "Cancel the run (nothing is written)",
    "Ctrl+O": "Open a model folder",
    "Ctrl+S": "Save the recipe as YAML",
    "Ctrl+Z": "Pipeline page: undo the preset or recipe that replaced your pipeline",
    **{f"Ctrl+{n}": f"Show step {n}" for n in range(1, 7)},
}


def open_model_folder(window: Any) -> None:
    """Show the Model page, ask for a model folder, and load it if one was chosen."""
    open_model(window, "folder")


def open_model(window: Any, kind: str) -> None:
    """Show the Model page, ask for a model ``kind`` ("folder" or "gguf" file), and load it if one was chosen."""
    window.nav.setCurrentRow(0)
    panel = window.model_panel
    before = panel.source()
    (panel.picker.choose_gguf if kind == "gguf" else panel.picker.choose_folder)()
    if panel.source() != before and not panel.is_busy():
        panel.load()


def save_recipe(window: Any) -> None:
    """Show the Pipeline page and ask where to save its recipe."""
    window.nav.setCurrentRow(1)
    window.pipeline_panel.recipe_bar._ask_save()


def install_shortcuts(window: Any) -> list[QShortcut]:
    """Create the window-wide shortcuts on ``window`` (a MainWindow) and return them."""
    made = [
        QShortcut(QKeySequence("Ctrl+R"), window, activated=window.run_pipeline),
        QShortcut(QKeySequence(Qt.Key.Key_Escape), window, activated=window.run_panel.cancel),
        QShortcut(QKeySequence("Ctrl+O"), window, activated=lambda: open_model_folder(window)),
        QShortcut(QKeySequence("Ctrl+S"), window, activated=lambda: save_recipe(window)),
    ]
    for row in range(window.nav.count()):
        made.append(QShortcut(QKeySequence(f"Ctrl+{row + 1}"), window,
                              activated=lambda r=row: window.nav.setCurrentRow(r)))
    for shortcut in made:
        shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
    return made
