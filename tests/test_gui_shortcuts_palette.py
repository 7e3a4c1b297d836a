"""Keyboard shortcuts for the main actions, and the system light/dark palette (no colours hard-coded)."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from gui.main_window import STEPS, MainWindow
from gui.shortcuts import SHORTCUTS


@pytest.fixture
def window(qtbot, monkeypatch):
    monkeypatch.setattr(QMessageBox, "exec", lambda box: int(QMessageBox.StandardButton.Ok))
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def test_ctrl_number_shows_each_screen(qtbot, window):
    for number, name in enumerate(STEPS, start=1):
        qtbot.keyClick(window, getattr(Qt.Key, f"Key_{number}"), Qt.KeyboardModifier.ControlModifier)
        assert window.nav.currentRow() == number - 1, name
        assert window.stack.currentIndex() == number - 1
    assert {f"Ctrl+{n}" for n in range(1, 7)} <= set(SHORTCUTS) and {"Ctrl+R", "Esc", "Ctrl+O", "Ctrl+S"} <= set(SHORTCUTS)


def test_ctrl_o_opens_a_model_folder_and_loads_it(qtbot, window, monkeypatch, tiny_llama_dir):
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tiny_llama_dir))
    loads = []
    monkeypatch.setattr(window.model_panel, "load", lambda: loads.append(window.model_panel.source()))
    window.nav.setCurrentRow(3)
    qtbot.keyClick(window, Qt.Key.Key_O, Qt.KeyboardModifier.ControlModifier)
    assert window.nav.currentRow() == 0 and loads == [str(tiny_llama_dir)]


def test_ctrl_s_saves_the_recipe(qtbot, window, monkeypatch, tmp_path):
    target = tmp_path / "mine.yaml"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    qtbot.keyClick(window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert window.nav.currentRow() == 1
    qtbot.waitUntil(target.is_file)
    assert "steps" in target.read_text()


def test_escape_cancels_a_running_job(qtbot, window, monkeypatch):
    cancelled = []
    monkeypatch.setattr(window.run_panel, "is_busy", lambda: True)
    fake = type("Job", (), {"cancel": lambda self: cancelled.append(1), "is_running": lambda self: False})()
    monkeypatch.setattr(window.run_panel, "job", fake)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert cancelled == [1]


def test_follows_the_system_palette(qtbot, window):
    """Fusion on the platform's palette, no app-wide colours; a dark palette reaches every page."""
    app = QApplication.instance()
    assert not app.styleSheet() and not window.styleSheet()
    light = app.palette()
    dark = QPalette(light)
    for role, colour in ((QPalette.ColorRole.Window, "#202124"), (QPalette.ColorRole.WindowText, "#e8eaed"),
                         (QPalette.ColorRole.Base, "#171717"), (QPalette.ColorRole.Text, "#e8eaed"),
                         (QPalette.ColorRole.PlaceholderText, "#7f7f7f")):
        dark.setColor(role, QColor(colour))
    try:
        app.setPalette(dark)  # what Qt does when the system switches to dark mode
        qtbot.waitUntil(lambda: window.palette().color(QPalette.ColorRole.Window) == QColor("#202124"))
        for page in (window.stack.widget(i) for i in range(window.stack.count())):
            assert page.palette().color(QPalette.ColorRole.Window).lightness() < 64, type(page).__name__
        assert window.run_panel.progress.overall_label.palette().color(QPalette.ColorRole.WindowText).lightness() > 192
    finally:
        app.setPalette(light)
