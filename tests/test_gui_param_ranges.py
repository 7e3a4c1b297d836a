"""Number boxes honour the allowed range exactly (issue 16, item 10): exclusive bounds, and a typed
value outside the range is explained, never silently changed into one that is not allowed."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from dataclasses import dataclass  # noqa: E402

from PySide6.QtCore import Qt  # noqa: E402

from core.engine.params import param  # noqa: E402
from gui.screens.pipeline.param_form import ParamForm  # noqa: E402


@dataclass
class Bounds:
    share: float = param(0.5, "A share below one.", minimum=0.0, maximum=1.0, exclusive_maximum=True)
    damp: float = param(0.01, "Above zero.", minimum=0.0, maximum=1.0, exclusive_minimum=True)
    count: int = param(4, "Whole number above 0 and below 10.", minimum=0, maximum=10, exclusive_minimum=True,
                       exclusive_maximum=True)


def _form(qtbot) -> ParamForm:
    form = ParamForm(Bounds())
    qtbot.addWidget(form)
    form.show()
    return form


def _type(qtbot, spin, text: str) -> None:
    spin.setFocus()
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), text)
    qtbot.keyClick(spin.lineEdit(), Qt.Key.Key_Return)


def test_exclusive_bounds_are_outside_the_box(qtbot):
    form = _form(qtbot)
    share, damp, count = (form.editors[n] for n in ("share", "damp", "count"))
    assert 0.999 <= share.maximum() < 1.0 and share.minimum() == 0.0
    assert 0.0 < damp.minimum() <= 0.001 and damp.maximum() == 1.0
    assert (count.minimum(), count.maximum()) == (1, 9)
    share.setValue(1.0)  # the box cannot hold a value the config refuses
    assert form.config.share < 1.0 and not form.error


def test_typed_value_outside_the_range_says_the_range_and_keeps_the_value(qtbot):
    form = _form(qtbot)
    share = form.editors["share"]
    for typed in ("1.5", "1"):
        _type(qtbot, share, typed)
        assert form.config.share == 0.5  # neither 1.0 (not allowed) nor the box's maximum
        note = form.range_notes["share"]
        assert note.isVisibleTo(form)
        assert typed in note.text() and "0.0 ≤ share < 1.0" in note.text() and "0.5" in note.text()
        assert not form.error  # the config itself is fine
    _type(qtbot, share, "0.7")
    assert form.config.share == 0.7 and not form.range_notes["share"].isVisibleTo(form)

    count = form.editors["count"]
    _type(qtbot, count, "10")
    assert form.config.count == 4 and "0 < count < 10" in form.range_notes["count"].text()
