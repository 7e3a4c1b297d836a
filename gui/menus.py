"""The main window's menu bar: File, View, Run and Help.

The menus name the window-wide keyboard shortcuts (gui/shortcuts.py) next to their entries but do
not register them a second time (a key bound twice fires neither), so the text after the tab is a
label only.  Help has the shortcut list, where the app keeps its files, and About.
"""

from __future__ import annotations

import html
import platform
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QAction, QActionGroup, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QLabel,
    QMenuBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.paths import cache_dir, data_dir, datasets_dir, original_measurements_dir
from gui.screens.run.cluster_dialog import show_cluster_dialog
from gui.shortcuts import SHORTCUTS, open_model, open_model_folder, save_recipe
from gui.theme import APPEARANCES, SETTINGS_KEY, apply_appearance, saved_appearance

# Page buttons carry their own shortcuts; listed here so Help names every key in one place.
PAGE_SHORTCUTS = {
    "Ctrl+Shift+O": "Compare and Export pages: open a saved result folder",
    "Ctrl+G": "Compare page: ask both models the same prompt (generate)",
    "Ctrl+Shift+S": "Export page: save a copy of the result folder",
    "Ctrl+E": "Export page: write a GGUF file",
    "Ctrl+Shift+Y": "Export page: save the recipe that made the result",
    "Ctrl+Shift+H": "Export page: save an HTML report",
}


def _labelled(text: str, key: str) -> str:
    """Menu text with ``key`` shown at the right (display only; the window's QShortcut does the work)."""
    return f"{text}\t{QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText)}"


def file_locations() -> list[tuple[str, Path, str]]:
    """(what, folder or file, what it holds) for every place the app writes to."""
    from core.history.store import history_path
    from gui.screens.pipeline.recipe_bar import default_output_root
    from gui.settings import app_settings

    return [
        ("Compressed models", default_output_root(),
         "Each run's output folder, unless you chose another on the Pipeline page. Yours to keep or delete."),
        ("Run history", history_path(), "The list on the History page (one SQLite file). Deleting a run there "
         "removes its record, never your model files."),
        ("Original's measurements", original_measurements_dir(),
         "Numbers measured once per original model and settings, reused by later runs. Safe to delete: they are "
         "measured again when needed."),
        ("Sample data", datasets_dir(), "The texts and task questions the app measures with (set up by the app)."),
        ("Converted models (cache)", cache_dir(), "GGUF files converted for loading. Safe to delete at any time."),
        ("Settings", Path(app_settings().fileName()), "Window size, last model, appearance."),
        ("App data folder", data_dir(), "Holds the folders above unless you moved them."),
    ]


def _open_location(path: Path) -> None:
    folder = path if path.is_dir() else path.parent
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))


class FileLocationsDialog(QDialog):
    """Help ▸ Where your files are kept: each folder, what it holds, and a button that opens it."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Where your files are kept")
        layout = QVBoxLayout(self)
        intro = QLabel("The app never changes the model you load; it only writes in these places.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        grid = QGridLayout()
        self.rows: list[tuple[str, Path]] = []
        for row, (name, path, what) in enumerate(file_locations()):
            label = QLabel(f"<b>{html.escape(name)}</b><br><code>{html.escape(str(path))}</code><br>"
                           f"{html.escape(what)}")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            button = QPushButton("Open")
            exists = path.exists() or path.parent.is_dir()
            button.setEnabled(exists)
            button.setToolTip("Show this folder in the file manager." if exists else "Not created yet.")
            button.clicked.connect(lambda _checked=False, p=path: _open_location(p))
            grid.addWidget(label, row, 0)
            grid.addWidget(button, row, 1)
            self.rows.append((name, path))
        layout.addLayout(grid)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


def shortcuts_html() -> str:
    """The shortcut list as a small HTML table."""
    rows = {**SHORTCUTS, **PAGE_SHORTCUTS, "Ctrl+Q": "Quit"}
    cells = "".join(f"<tr><td><b>{html.escape(QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText))}"
                    f"</b>&nbsp;&nbsp;</td><td>{html.escape(what)}</td></tr>" for key, what in rows.items())
    return f"<table cellpadding='3'>{cells}</table>"


def about_html() -> str:
    """Version, what the app is for, and the versions of what it runs on (read without importing torch)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    try:
        own = version("llm-compression-studio")
    except PackageNotFoundError:
        own = "development copy"
    parts = ", ".join(f"{name} {installed(name)}" for name in ("torch", "transformers", "PySide6"))
    return (f"<h3>LLM Compression Studio</h3><p>Version {html.escape(own)}</p>"
            "<p>Shrink a language model by quantization, pruning, distillation, low-rank factorization and layer "
            "sharing; compare the original with the result, measured; export it in formats other tools run. "
            "Every run is saved as a recipe that the command line (<code>compression-studio-cli run</code>) "
            "repeats exactly.</p>"
            f"<p>Running on Python {platform.python_version()} ({html.escape(sys.platform)}), "
            f"{html.escape(parts)}.</p>"
            "<p>The bundled model is SmolLM2-135M (Apache-2.0, Hugging Face); the task questions come from "
            "the datasets named in <code>datasets/tasks/SOURCES.md</code> under their own licences.</p>")


def install_menus(window: Any) -> QMenuBar:
    """Build the menu bar of ``window`` (a MainWindow); returns it.  Actions are kept on ``window.menu_actions``."""
    bar = window.menuBar()
    actions: dict[str, QAction] = {}

    def add(menu, key: str, text: str, slot, shortcut: str | None = None, tip: str = "") -> QAction:
        action = QAction(_labelled(text, shortcut) if shortcut else text, window)
        action.triggered.connect(slot)
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        menu.addAction(action)
        actions[key] = action
        return action

    file_menu = bar.addMenu("&File")
    add(file_menu, "open_folder", "Open model folder…", lambda: open_model_folder(window), "Ctrl+O",
        "Load a Hugging Face model folder (config.json and weights).")
    add(file_menu, "open_gguf", "Open GGUF file…", lambda: open_model(window, "gguf"), None,
        "Load a .gguf model file (it is converted once and cached).")
    file_menu.addSeparator()
    add(file_menu, "load_recipe", "Load recipe…", lambda: _show_page(window, 1, "_ask_load"), None,
        "Read a recipe YAML into the Pipeline page (asks before replacing your steps).")
    add(file_menu, "save_recipe", "Save recipe…", lambda: save_recipe(window), "Ctrl+S",
        "Write the Pipeline page's recipe as YAML, to run again here or with compression-studio-cli.")
    file_menu.addSeparator()
    quit_action = add(file_menu, "quit", "Quit", window.close, None, "Close the app (a running job is stopped).")
    quit_action.setShortcut(QKeySequence.StandardKey.Quit)

    view_menu = bar.addMenu("&View")
    for row in range(window.nav.count()):
        name = str(window.nav.item(row).data(Qt.ItemDataRole.UserRole))
        add(view_menu, f"page_{name.lower()}", name, lambda _checked=False, r=row: window.nav.setCurrentRow(r),
            f"Ctrl+{row + 1}")
    view_menu.addSeparator()
    appearance_menu = view_menu.addMenu("Appearance")
    group = QActionGroup(window)
    current = saved_appearance(window.settings)
    for value, text in APPEARANCES.items():
        action = QAction(text, window, checkable=True)
        action.setChecked(value == current)
        action.triggered.connect(lambda _checked=False, v=value: set_appearance(window, v))
        group.addAction(action)
        appearance_menu.addAction(action)
        actions[f"appearance_{value}"] = action

    run_menu = bar.addMenu("&Run")
    add(run_menu, "run", "Run the pipeline", window.run_pipeline, "Ctrl+R",
        "Show the Run page and start compressing in the background.")
    add(run_menu, "cancel", "Cancel the run", window.run_panel.cancel, "Esc",
        "Stop at the next safe point; nothing is written.")
    run_menu.addSeparator()
    add(run_menu, "cluster", "Run on a cluster…", lambda: show_cluster_dialog(window), None,
        "Write the recipe and the torchrun / accelerate commands that run it on several GPUs or machines.")

    help_menu = bar.addMenu("&Help")
    add(help_menu, "shortcuts", "Keyboard shortcuts", lambda: show_shortcuts(window), None,
        "Every key the app answers to.")
    add(help_menu, "files", "Where your files are kept", lambda: FileLocationsDialog(window).exec(), None,
        "The folders the app writes to, and what each holds.")
    help_menu.addSeparator()
    add(help_menu, "about", "About LLM Compression Studio", lambda: show_about(window), None,
        "Version and what the app runs on.")
    window.menu_actions = actions
    return bar


def _show_page(window: Any, row: int, method: str) -> None:
    window.nav.setCurrentRow(row)
    getattr(window.pipeline_panel.recipe_bar, method)()


def _message(window: Any, title: str, text: str) -> QDialog:
    dialog = QDialog(window)
    dialog.setWindowTitle(title)
    layout = QVBoxLayout(dialog)
    label = QLabel(text)
    label.setWordWrap(True)
    label.setOpenExternalLinks(True)
    layout.addWidget(label)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    layout.addWidget(buttons)
    return dialog


def show_shortcuts(window: Any) -> None:
    _message(window, "Keyboard shortcuts", shortcuts_html()).exec()


def show_about(window: Any) -> None:
    _message(window, "About LLM Compression Studio", about_html()).exec()


def set_appearance(window: Any, appearance: str) -> None:
    """Remember ``appearance`` and draw the app in it now."""
    window.settings.setValue(SETTINGS_KEY, appearance)
    app = QApplication.instance()
    if app is not None:
        apply_appearance(app, appearance)
