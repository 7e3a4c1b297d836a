"""Presets never silently replace work (issue 16, item 7): ask first, Undo (Ctrl+Z), the names follow edits.

pytest-qt on the offscreen platform; no model is loaded (a preset applies to whatever model is chosen).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QPoint, Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

pytest_plugins = ["tests.gui_fixtures"]  # the dialogs and window fixtures
TIMEOUT_MS = 120_000


def _index(bar, words: str) -> int:
    return next(i for i in range(1, bar.presets.count()) if words in bar.presets.itemText(i))


def _choose(bar, index: int) -> None:
    """What a click on an entry of the preset list does."""
    bar.presets.setCurrentIndex(index)
    bar.presets.activated.emit(index)


@pytest.fixture
def answers(monkeypatch):
    """The question boxes shown, answered in turn from the list the test fills."""
    queue: list[QMessageBox.StandardButton] = []
    asked: list[QMessageBox] = []

    def fake_exec(box):
        asked.append(box)
        return int(queue.pop(0)) if queue else int(QMessageBox.StandardButton.Ok)

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    return queue, asked


def test_preset_over_edits_asks_and_ctrl_z_brings_the_edits_back(qtbot, window, answers):
    queue, asked = answers
    panel, bar = window.pipeline_panel, window.pipeline_panel.recipe_bar
    window.nav.setCurrentRow(1)  # the Pipeline page
    quick = _index(bar, "magnitude 30%")
    quick_name = bar.presets.itemText(quick)
    _choose(bar, quick)
    assert not asked  # nothing was edited yet: no question
    assert panel.name.text() == quick_name and bar.presets.currentText() == quick_name

    panel.step_list.setCurrentRow(0)
    panel.form.set_value("sparsity", 0.35)
    panel.data_box.data_form.set_value("sequence_length", 64)
    assert bar.presets.currentText() == f"Custom (edited from {quick_name})"
    assert panel.name.text() == f"{quick_name} (edited)"
    edited = panel.build_recipe().to_dict()

    other = _index(bar, "8-bit")
    queue.append(QMessageBox.StandardButton.Cancel)  # "Keep my pipeline"
    _choose(bar, other)
    assert len(asked) == 1 and "replace" in asked[0].text().lower()
    assert asked[0].icon() == QMessageBox.Icon.Question
    assert panel.build_recipe().to_dict() == edited  # nothing changed
    assert bar.presets.currentText() == f"Custom (edited from {quick_name})"

    queue.append(QMessageBox.StandardButton.Ok)  # "Replace"
    _choose(bar, other)
    assert len(asked) == 2
    got = panel.build_recipe()
    assert [s.technique for s in got.steps] == ["rtn_quantize"] and got.data.sequence_length == 512
    assert panel.undo_button.isVisibleTo(panel) and "Ctrl+Z" in panel.undo_button.text()
    assert bar.presets.itemText(other) in panel.undo_note.text()

    qtbot.keyClick(panel.step_list, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert panel.build_recipe().to_dict() == edited  # steps, data settings and name are back
    assert bar.presets.currentText() == f"Custom (edited from {quick_name})"
    assert not panel.undo_button.isVisibleTo(panel)
    assert len(asked) == 2


def test_undo_button_and_a_typed_name_is_kept(qtbot, window, answers):
    _queue, asked = answers
    panel, bar = window.pipeline_panel, window.pipeline_panel.recipe_bar
    _choose(bar, _index(bar, "magnitude 30%"))
    panel.name.clear()
    qtbot.keyClicks(panel.name, "my laptop model")
    panel.step_list.setCurrentRow(0)
    panel.form.set_value("sparsity", 0.4)
    assert panel.name.text() == "my laptop model"  # what the person typed is never overwritten
    mine = panel.build_recipe().to_dict()

    _choose(bar, _index(bar, "2:4"))  # the dialogs answer Ok: replace
    assert len(asked) == 1 and panel.build_recipe().steps[0].technique == "wanda_prune"
    qtbot.mouseClick(panel.undo_button, Qt.MouseButton.LeftButton)
    assert panel.build_recipe().to_dict() == mine


def test_an_unedited_preset_is_replaced_without_a_question(qtbot, window, answers):
    _queue, asked = answers
    panel, bar = window.pipeline_panel, window.pipeline_panel.recipe_bar
    _choose(bar, _index(bar, "magnitude 30%"))
    panel.step_list.setCurrentRow(0)
    panel.form.set_value("sparsity", 0.35)
    panel.form.set_value("sparsity", 0.3)  # back to the preset's own value: nothing is lost
    assert bar.presets.currentText() == bar.presets.itemText(_index(bar, "magnitude 30%"))
    _choose(bar, _index(bar, "8-bit"))
    assert not asked


def test_preset_list_opens_below_the_box(qtbot, window):
    """Not centred on the current entry: a second click where the box was cannot pick another preset."""
    bar = window.pipeline_panel.recipe_bar
    window.nav.setCurrentRow(1)
    bar.presets.setCurrentIndex(bar.presets.count() - 1)
    bar.presets.showPopup()
    try:
        popup = bar.presets.view().window()
        qtbot.waitUntil(popup.isVisible)
        box_bottom = bar.presets.mapToGlobal(bar.presets.rect().bottomLeft()).y()
        box_top = bar.presets.mapToGlobal(QPoint(0, 0)).y()
        assert popup.geometry().top() >= box_bottom or popup.geometry().bottom() <= box_top
    finally:
        bar.presets.hidePopup()
