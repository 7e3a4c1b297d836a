"""The real app end to end with pytest-qt on the offscreen platform and the tiny model.

Choose the model, add steps, run and watch points arrive, cancel mid-run (no output), run again to
the end, compare (table filled, playground answers on both sides), export (the copied folder loads,
GGUF, recipe, HTML report), and the error dialog for bad paths.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication, QFileDialog  # noqa: E402

from core.eval.compare import divergence_sentence  # noqa: E402
from gui.main_window import STEPS  # noqa: E402
from tests.conftest import SAMPLE_TEXT  # noqa: E402
from tests.helpers import choose_model, slowed, small_data  # noqa: E402

pytest_plugins = ["tests.gui_fixtures"]  # the dialogs and window fixtures
TIMEOUT_MS = 180_000
CTRL, SHIFT = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def save_as(monkeypatch):
    """Answers the next 'save as' dialog with the path put in ``save_as.path``."""

    class Answer:
        path: Path | None = None

    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(Answer.path), ""))
    return Answer


def _add(panel, name):
    item = panel.palette_view.item_for(name)
    assert item is not None and item.flags() & Qt.ItemFlag.ItemIsEnabled, name
    panel.palette_view.setCurrentItem(item)
    panel.palette_view.itemActivated.emit(item, 0)


def _press(qtbot, window, key, modifiers=Qt.KeyboardModifier.NoModifier):
    """A shortcut as a person presses it: in the active window."""
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    qtbot.keyClick(window, key, modifiers)


def _wait_job(qtbot, job):
    assert job is not None
    qtbot.waitUntil(lambda: not job.is_running(), timeout=TIMEOUT_MS)


def _export_by_key(qtbot, window, key, modifiers):
    """Press an Export shortcut (a button's shortcut clicks it a moment later) and wait for its job."""
    panel, before = window.export_panel, window.export_panel.job
    _press(qtbot, window, key, modifiers)
    qtbot.waitUntil(lambda: panel.job is not before, timeout=10_000)
    _wait_job(qtbot, panel.job)


def test_choose_run_cancel_run_compare_export(qtbot, window, dialogs, save_as, tiny_llama_dir, tmp_path,
                                              monkeypatch):
    from transformers import AutoModelForCausalLM

    import gui.jobs
    from core.io.gguf_export import read_gguf_summary
    from core.models.loading import load_model

    text = tmp_path / "text.txt"
    text.write_text(SAMPLE_TEXT, encoding="utf-8")
    out_root = tmp_path / "out"

    # 1. Choose the model.
    choose_model(qtbot, window, tiny_llama_dir, TIMEOUT_MS)

    # 2. Add two steps, small data, speed measured.
    panel = window.pipeline_panel
    window.nav.setCurrentRow(STEPS.index("Pipeline"))
    _add(panel, "magnitude_prune")
    _add(panel, "wanda_prune")
    assert [s.technique for s in panel.step_list.ordered_steps()] == ["magnitude_prune", "wanda_prune"]
    small_data(panel.data_box, text)
    panel.data_box.eval_form.set_value("speed", True)
    panel.recipe_bar.output.setText(str(out_root))

    # 3. Run (slowed), see points arrive in the plots, cancel mid-run: nothing is written.
    real = gui.jobs.run_pipeline
    monkeypatch.setattr(gui.jobs, "run_pipeline", slowed(real, 0.03))
    run = window.run_panel
    _press(qtbot, window, Qt.Key.Key_R, CTRL)
    assert window.stack.currentWidget() is run and run.is_busy()
    qtbot.waitUntil(lambda: run.plots.size.size >= 1 and bool(run.plots.layer_values), timeout=TIMEOUT_MS)
    # the plots redraw on a timer (not per event): wait for the tick that draws those points
    qtbot.waitUntil(lambda: len(run.plots.size_curve.xData if run.plots.size_curve.xData is not None else ()) >= 1
                    and len(run.plots.bars.opts.get("height") if run.plots.bars.opts.get("height") is not None
                            else ()) >= 1, timeout=10_000)
    with qtbot.waitSignal(run.job.cancelled, timeout=60_000):
        _press(qtbot, window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not run.is_busy())
    assert run.status.text() == "Cancelled — nothing was written."
    assert not any(out_root.iterdir()) and not dialogs
    assert window.compare_panel.run is None

    # 4. Run again to completion.
    monkeypatch.setattr(gui.jobs, "run_pipeline", real)
    with qtbot.waitSignal(run.run_finished, timeout=120_000):
        _press(qtbot, window, Qt.Key.Key_R, CTRL)
    qtbot.waitUntil(lambda: not run.is_busy())
    assert not dialogs, [d.text() for d in dialogs]
    output = run.output_dir
    assert output.is_dir() and len(run.plots.size_curve.xData) == 3  # before, after step 1, after step 2

    # 5. Compare: the table is filled from the report, every number measured.
    compare = window.compare_panel
    assert compare.run is not None and compare.run.folder == output
    report = compare.run.report
    table = compare.table
    assert table.text_at("Parameters", 1) == f"{report['before']['parameters']:,}"
    assert table.text_at("Non-zero parameters", 3).endswith("×")
    assert float(table.text_at("Non-zero parameters", 3)[:-1]) < 0.8
    assert "tokens/s" in table.text_at("Decode speed", 2)
    assert table.text_at("Perplexity", 2) and "not measured" not in table.text_at("KL to the teacher", 1)
    assert len(compare.charts.ratio_bars.opts["width"]) >= 4

    window.nav.setCurrentRow(STEPS.index("Compare"))
    playground = compare.playground
    playground.prompt.setText("The quick brown")
    playground.new_tokens.setValue(12)
    with qtbot.waitSignal(playground.answered, timeout=TIMEOUT_MS) as answered:
        _press(qtbot, window, Qt.Key.Key_G, CTRL)
    result = answered.args[0]
    for side, answer in (("teacher", result.teacher), ("student", result.student)):
        assert answer.tokens and playground.answers[side].toPlainText().strip()
        assert "first token after" in playground.speeds[side].text()
    assert playground.status.text() == divergence_sentence(result.divergence)  # where the answers part, in words
    _wait_job(qtbot, playground.job)
    with qtbot.waitSignal(playground.answered, timeout=TIMEOUT_MS):  # models kept: answers again
        playground.generate()
    assert not dialogs, [d.text() for d in dialogs]

    # 6. Export: a copy that loads, a GGUF file, the recipe, the HTML report — by their shortcuts.
    export = window.export_panel
    window.nav.setCurrentRow(STEPS.index("Export"))
    qtbot.waitUntil(lambda: export.info is not None, timeout=TIMEOUT_MS)
    assert "plain transformers" in export.folder_label.text() and export.gguf_button.isEnabled()
    save_as.path = tmp_path / "exported"
    _export_by_key(qtbot, window, Qt.Key.Key_S, CTRL | SHIFT)
    assert not dialogs, [d.text() for d in dialogs]
    copied = tmp_path / "exported"
    assert (copied / "report.json").is_file()
    AutoModelForCausalLM.from_pretrained(copied)
    assert sum(p.numel() for p in load_model(str(copied)).model.parameters()) == report["after"]["parameters"]

    export.gguf.set_checked(["Q4_0"])
    save_as.path = tmp_path / "tiny.gguf"
    _export_by_key(qtbot, window, Qt.Key.Key_E, CTRL)
    assert not dialogs, [d.text() for d in dialogs]
    assert read_gguf_summary(tmp_path / "tiny.gguf")["tensors"]["blk.0.ffn_up.weight"]["type"] == "Q4_0"

    save_as.path = tmp_path / "recipe.yaml"
    _export_by_key(qtbot, window, Qt.Key.Key_Y, CTRL | SHIFT)
    assert "wanda_prune" in (tmp_path / "recipe.yaml").read_text()
    save_as.path = tmp_path / "report.html"
    _export_by_key(qtbot, window, Qt.Key.Key_H, CTRL | SHIFT)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and html.count("data:image/png;base64,") == 2 and not dialogs

    # 7. Bad paths: the error dialog, nothing written, the app still usable.
    export.save_copy(tmp_path / "no-such-folder" / "copy")
    _wait_job(qtbot, export.job)
    assert len(dialogs) == 1 and "does not exist" in dialogs[0].text()
    assert dialogs[0].informativeText().startswith("What to do:")
    assert not (tmp_path / "no-such-folder").exists() and "failed" in export.status.text()
    assert compare.open_folder(tiny_llama_dir) is None  # a model folder, not a run's output
    assert len(dialogs) == 2 and "not the output of a run" in dialogs[1].text()
    assert compare.run.folder == output and export.copy_button.isEnabled() and window.isVisible()
    # A file this app did not write is never replaced, even after the save dialog's "Replace?"; its own is.
    theirs = tmp_path / "downloaded.gguf"
    theirs.write_bytes(b"GGUF" + bytes(64))
    export.export_gguf(theirs)
    _wait_job(qtbot, export.job)
    assert len(dialogs) == 3 and "not a GGUF file this app exported" in dialogs[2].text()
    assert theirs.read_bytes() == b"GGUF" + bytes(64)
    export.export_gguf(tmp_path / "tiny.gguf")
    _wait_job(qtbot, export.job)
    assert len(dialogs) == 3 and read_gguf_summary(tmp_path / "tiny.gguf")["architecture"] == "llama"
