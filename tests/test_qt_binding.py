"""The Qt binding must not leak references to None/True/False (PySide6 6.12.0 did: the app crashed after ~5,000 calls).

On Python 3.11 None, True and False are ordinary objects with a reference count; a binding that
returns them from C without taking a reference lowers that count on every call until Python
aborts ("deallocating None").  From Python 3.12 they are immortal and the count cannot fall.
"""

from __future__ import annotations

import sys


def test_void_qt_calls_do_not_eat_references_to_none_or_bools(qtbot):
    from PySide6.QtWidgets import QLabel, QProgressBar

    label, bar = QLabel(), QProgressBar()
    qtbot.addWidget(label)
    qtbot.addWidget(bar)
    before = sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)
    for _ in range(500):
        label.setText("x")
        bar.setValue(3)
        label.setEnabled(True)
        label.isVisible()
    after = sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)
    assert all(a > b - 400 for a, b in zip(after, before, strict=True)), (
        f"references to None/True/False fell from {before} to {after}: this Qt binding leaks them; "
        "pin PySide6-Essentials to a release without the bug (see pyproject.toml)")
