"""Fixtures shared by the GUI tests that drive the real main window (pytest-qt, offscreen).

A test module takes them with ``pytest_plugins = ["tests.gui_fixtures"]`` (not by importing this
module, so pytest rewrites its asserts and no fixture name is shadowed) and sets its own
``TIMEOUT_MS``: how long the window's background setup may take.  Helpers for driving the window
are in :mod:`tests.helpers`.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from gui.main_window import MainWindow  # noqa: E402

SETUP_TIMEOUT_MS = 120_000  # for a module without a TIMEOUT_MS of its own


@pytest.fixture
def dialogs(monkeypatch):
    """Every QMessageBox the app shows, recorded (and answered Ok) instead of blocking the test."""
    shown: list[QMessageBox] = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: shown.append(box) or int(QMessageBox.StandardButton.Ok))
    return shown


@pytest.fixture
def window(qtbot, dialogs, request):
    """The main window, shown, once its background setup is done (within the module's ``TIMEOUT_MS``).

    At teardown every job still running (Run, Compare, Export pages) is cancelled and waited for.
    """
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(win.start_background_setup().done,
                          timeout=getattr(request.module, "TIMEOUT_MS", SETUP_TIMEOUT_MS)):
        pass
    yield win
    for job in (win.run_panel.job, *win.compare_panel.jobs(), *win.export_panel.jobs()):
        if job is not None:
            job.cancel_and_wait()
