"""The menu bar (File, View, Run, Help) and the light/dark appearance (issue 16: Help menu, dark theme)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QKeySequence, QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialog, QLabel, QPushButton  # noqa: E402

from core.engine import original_cache  # noqa: E402
from core.history.store import history_path  # noqa: E402
from core.paths import HOME_ENV  # noqa: E402
from gui import menus, theme  # noqa: E402
from gui.main_window import STEPS, MainWindow  # noqa: E402
from gui.screens.pipeline.recipe_bar import default_output_root  # noqa: E402
from gui.shortcuts import SHORTCUTS  # noqa: E402


@pytest.fixture
def window(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    theme.apply_appearance(QApplication.instance(), "light")  # leave the palette as other tests expect it


@pytest.fixture
def shown_dialogs(monkeypatch):
    """Dialogs the menus open, recorded instead of blocking."""
    shown: list[QDialog] = []
    monkeypatch.setattr(QDialog, "exec", lambda dialog: shown.append(dialog) or 0)
    return shown


def _is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 100 < palette.color(
        QPalette.ColorRole.WindowText).lightness()


def test_menu_bar_has_file_view_run_help(window):
    titles = [action.text().replace("&", "") for action in window.menuBar().actions()]
    assert titles == ["File", "View", "Run", "Help"]


def test_view_menu_pages_switch_the_page_and_name_their_keys(window):
    for row, name in enumerate(STEPS):
        action = window.menu_actions[f"page_{name.lower()}"]
        assert action.text().split("\t") == [name, QKeySequence(f"Ctrl+{row + 1}").toString(
            QKeySequence.SequenceFormat.NativeText)]
        action.trigger()
        assert window.nav.currentRow() == row
        assert action.shortcut().isEmpty()  # the window's QShortcut owns the key; bound twice, neither fires


def test_shortcuts_dialog_lists_every_window_shortcut(window, shown_dialogs):
    window.menu_actions["shortcuts"].trigger()
    assert len(shown_dialogs) == 1
    text = " ".join(label.text() for label in shown_dialogs[0].findChildren(QLabel))
    for key, what in {**SHORTCUTS, **menus.PAGE_SHORTCUTS}.items():
        assert QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText) in text
        assert what.split(":")[0] in text


def test_where_files_are_kept_names_the_real_folders(window, shown_dialogs, tmp_path):
    window.menu_actions["files"].trigger()
    dialog = shown_dialogs[0]
    places = dict(dialog.rows)
    assert places["Compressed models"] == default_output_root()  # where the Pipeline page puts results
    assert places["Original's measurements"] == original_cache.cache_folder()  # where they are really kept
    assert all(str(path).startswith(os.environ[HOME_ENV]) for path in places.values() if path == history_path())
    texts = " ".join(label.text() for label in dialog.findChildren(QLabel))
    assert str(history_path()) in texts
    assert len(dialog.findChildren(QPushButton)) >= len(places)


def test_about_names_the_app_and_its_versions(window, shown_dialogs):
    window.menu_actions["about"].trigger()
    text = " ".join(label.text() for label in shown_dialogs[0].findChildren(QLabel))
    assert "LLM Compression Studio" in text and "transformers" in text and "Python" in text


def test_quit_closes_the_window(window, qtbot):
    window.menu_actions["quit"].trigger()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)


def test_dark_appearance_is_drawn_dark_and_remembered(window):
    app = QApplication.instance()
    window.menu_actions["appearance_dark"].trigger()
    assert _is_dark(app.palette())
    assert window.settings.value(theme.SETTINGS_KEY) == "dark"
    window.menu_actions["appearance_light"].trigger()
    assert not _is_dark(app.palette())
    assert window.settings.value(theme.SETTINGS_KEY) == "light"


def test_following_the_system_turns_dark_when_the_desktop_does(window, monkeypatch):
    app = QApplication.instance()
    window.menu_actions["appearance_system"].trigger()
    theme.follow_system(app, window.settings)
    assert not _is_dark(app.palette())  # the offscreen platform has no scheme: light
    monkeypatch.setattr(theme, "system_scheme", lambda _app: "dark")
    app.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)  # the desktop switched to dark
    assert _is_dark(app.palette())
    window.menu_actions["appearance_light"].trigger()  # a fixed choice is not overridden by the desktop
    app.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert not _is_dark(app.palette())


def test_dark_palette_has_readable_disabled_text():
    palette = theme.dark_palette()
    window_light = palette.color(QPalette.ColorRole.Window).lightness()
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        assert palette.color(QPalette.ColorGroup.Disabled, role).lightness() - window_light > 50
        assert palette.color(role).lightness() > palette.color(QPalette.ColorGroup.Disabled, role).lightness()
