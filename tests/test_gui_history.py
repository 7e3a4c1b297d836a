"""The History page with pytest-qt (offscreen): rows, Pareto highlight, compare, delete, interrupted."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

import gui.screens.history.panel as history_panel  # noqa: E402
from core.engine.recipe import Recipe, Step  # noqa: E402
from core.history.store import History  # noqa: E402
from gui.screens.history.panel import HistoryPanel  # noqa: E402
from gui.screens.history.table import COLUMNS  # noqa: E402


def _recipe(name: str, sparsity: float = 0.5, source: str = "bundled:smollm2-135m") -> Recipe:
    from core.engine.registry import get_technique

    config = get_technique("magnitude_prune").config_cls(sparsity=sparsity)
    recipe = Recipe(name=name, steps=[Step("magnitude_prune", config)])
    recipe.model.source = source
    return recipe


def _fake_run(tmp_path, name: str, size: float, ppl: float, status: str = "done", source: str = "bundled:smollm2-135m",
              with_folder: bool = False) -> int:
    """A finished run recorded without computing anything (the panel only reads the history)."""
    history = History(recover=False)
    output = tmp_path / name.replace(" ", "-")
    run_id = history.start_run(_recipe(name, source=source), output, device="cpu", origin="test")
    if with_folder:
        output.mkdir()
        (output / "model.safetensors").write_bytes(b"\0" * 5000)
        (output / "report.json").write_text("{}")
    if status != "running":
        # The original: larger and better than every run here (a run is best only when smaller than it).
        metrics = {"bytes_on_disk_after": size, "perplexity_after": ppl, "bytes_on_disk_before": 269e6,
                   "perplexity_before": 9.0, "steps": ["magnitude_prune"]} if status == "done" else {}
        history.finish_run(run_id, status, metrics=metrics, message="" if status == "done" else "it broke")
    return run_id


@pytest.fixture
def panel(qtbot):
    def make() -> HistoryPanel:
        widget = HistoryPanel()
        qtbot.addWidget(widget)
        widget.resize(1100, 750)
        widget.show()
        qtbot.waitExposed(widget)
        return widget

    return make


def _column(panel, name):
    column = COLUMNS.index(name)
    return [panel.table.item(row, column).text() for row in range(panel.table.rowCount())]


def test_empty_state_explains_itself(panel):
    widget = panel()
    assert widget.pages.currentWidget() is widget.empty and widget.empty.text().startswith("No runs yet")
    for control in (widget.rerun_button, widget.open_button, widget.delete_button, widget.refresh_button,
                    widget.quality_box, widget.model_box, widget.table, widget.plot.widget, widget.comparison):
        assert control.toolTip(), control


def test_rows_newest_first_with_status_and_pareto_highlight(panel, tmp_path):
    ids = [_fake_run(tmp_path, "big good", 100e6, 10.0), _fake_run(tmp_path, "small bad", 40e6, 14.0),
           _fake_run(tmp_path, "dominated", 120e6, 12.0), _fake_run(tmp_path, "middle", 70e6, 11.0),
           _fake_run(tmp_path, "broken", 0, 0, status="failed")]
    widget = panel()
    assert widget.pages.currentIndex() == 1
    assert _column(widget, "#") == [str(i) for i in reversed(ids)]
    assert _column(widget, "Status") == ["●  Failed", "●  Done", "●  Done", "●  Done", "●  Done"]
    failed_status = widget.table.item(0, COLUMNS.index("Status"))
    assert "it broke" in failed_status.toolTip() and failed_status.foreground().color().name() == "#d62728"
    # The Pareto front: small bad, middle, big good (increasing size); "dominated" is not on it.
    assert widget.plot.front_ids == [ids[1], ids[3], ids[0]]
    assert _column(widget, "Best") == ["", "★", "", "★", "★"]
    assert widget.quality_box.currentData().key == "perplexity_after"
    assert len(widget.plot.points.data) == 1 and len(widget.plot.front.data) == 3
    assert "3 on the best-trade-off line" in widget.plot.note.text()
    # Hover text names the run.
    assert f"Run #{ids[3]}: middle — a best trade-off" in widget.plot._tip(70.0, 11.0, ids[3])
    # Clicking a point selects its run in the table.
    widget.plot.run_clicked.emit(ids[2])
    assert widget.table.selected_ids() == [ids[2]]


def test_quality_axis_turns_logarithmic_when_one_run_is_far_off(panel, tmp_path):
    import numpy as np

    close = [_fake_run(tmp_path, "a", 100e6, 18.0), _fake_run(tmp_path, "b", 60e6, 25.0)]
    widget = panel()
    assert not widget.plot.log_y and "log" not in widget.plot.widget.getAxis("left").labelText
    far = _fake_run(tmp_path, "broken weights", 30e6, 12_000.0)
    widget.refresh()
    plot = widget.plot
    assert plot.log_y and plot.widget.getAxis("left").logMode is True and "logarithmic" in plot.note.text()
    ys = dict(zip(plot.front.data["data"].tolist(), plot.front.data["y"].tolist(), strict=True))
    assert ys[far] == pytest.approx(np.log10(12_000.0)) and ys[close[0]] == pytest.approx(np.log10(18.0))
    assert plot._tip(0, 0, far).endswith("perplexity 1.2e+04")  # the value, not its log


def test_two_runs_side_by_side(panel, tmp_path):
    a = _fake_run(tmp_path, "first", 100e6, 10.0)
    b = _fake_run(tmp_path, "second", 50e6, 12.5)
    widget = panel()
    widget.table.select_run(a)
    assert widget.comparison.horizontalHeaderItem(0).text() == "Before"
    assert widget.rerun_button.isEnabled()
    widget.table.select_run(b, add=True)
    comparison = widget.comparison
    headers = [comparison.horizontalHeaderItem(c).text() for c in range(comparison.columnCount())]
    assert headers == [f"Run #{a}", f"Run #{b}", f"#{b} vs #{a}"]  # the older run first
    rows = {comparison.verticalHeaderItem(r).text(): [comparison.item(r, c).text() for c in range(3)]
            for r in range(comparison.rowCount())}
    assert rows["Size on disk"] == ["100.0 MB", "50.0 MB", "× 0.5"]
    assert rows["Perplexity"] == ["10", "12.5", "+2.5"]
    assert rows["Steps"][:2] == ["magnitude_prune", "magnitude_prune"]
    assert not widget.rerun_button.isEnabled() and widget.delete_button.isEnabled()
    assert len(widget.plot.selected.data) == 2


def test_delete_asks_and_deletes_files_only_when_confirmed(panel, tmp_path, monkeypatch):
    keep = _fake_run(tmp_path, "keep files", 10e6, 10.0, with_folder=True)
    gone = _fake_run(tmp_path, "delete files", 20e6, 9.0, with_folder=True)
    widget = panel()
    asked = []

    def answer(choice):
        def confirm(parent, records, folders):
            asked.append((records, folders))
            return choice
        return confirm

    for run_id, choice in ((keep, "cancel"), (keep, "record"), (gone, "files")):
        monkeypatch.setattr(history_panel, "confirm_delete", answer(choice))
        widget.table.select_run(run_id)
        widget.delete_selected()
    (records, folders), _, (_, gone_folders) = asked
    assert [r.id for r in records] == [keep] and folders[0][0] == tmp_path / "keep-files" and folders[0][1] == 5002
    assert gone_folders[0][0] == tmp_path / "delete-files"
    assert History().runs() == [] and widget.pages.currentWidget() is widget.empty
    assert (tmp_path / "keep-files").is_dir() and not (tmp_path / "delete-files").exists()


def test_confirmation_dialog_names_the_folder_and_its_size(qtbot, tmp_path, monkeypatch):
    _fake_run(tmp_path, "with folder", 10e6, 10.0, with_folder=True)
    record = History().runs()[0]
    shown = []

    def click(box, label):
        shown.append(box.informativeText())
        next(b for b in box.buttons() if b.text().startswith(label)).click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", lambda box: click(box, "Also delete"))
    assert history_panel.confirm_delete(None, [record], [(tmp_path / "with-folder", 5002)]) == "files"
    assert str(tmp_path / "with-folder") in shown[0] and "5.0 KB" in shown[0]
    monkeypatch.setattr(QMessageBox, "exec", lambda box: click(box, "Remove from history"))
    assert history_panel.confirm_delete(None, [record], []) == "record"
    monkeypatch.setattr(QMessageBox, "exec", lambda box: click(box, "Cancel"))
    assert history_panel.confirm_delete(None, [record], []) == "cancel"


def test_interrupted_run_is_shown_at_start(panel, tmp_path):
    history = History()
    run_id = history.start_run(_recipe("killed"), tmp_path / "killed-out")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with history.connect(write=True) as conn:
        conn.execute("UPDATE runs SET pid = ? WHERE id = ?", (dead.pid, run_id))
    (tmp_path / ".killed-out.partial-1234abcd").mkdir()
    widget = panel()
    assert _column(widget, "Status") == ["●  Interrupted"] and _column(widget, "Steps") == ["magnitude_prune"]
    tip = widget.table.item(0, COLUMNS.index("Status")).toolTip()
    assert "stopped before the end" in tip and "removed the unfinished save" in tip
    assert not (tmp_path / ".killed-out.partial-1234abcd").exists()
    assert not widget.delete_button.isEnabled()  # nothing selected yet
    widget.table.select_run(run_id)
    assert widget.delete_button.isEnabled() and not widget.open_button.isEnabled()


def test_rerun_emits_the_recipe_and_plot_filters_by_model(panel, qtbot, tmp_path):
    _fake_run(tmp_path, "on smol", 100e6, 10.0)
    other = _fake_run(tmp_path, "on other", 50e6, 30.0, source="/models/other-model")
    widget = panel()
    assert widget.model_box.currentText() == "other-model"  # the newest run's model, when there are several
    assert widget.plot.front_ids == [other]
    widget.model_box.setCurrentIndex(0)
    widget.model_box.activated.emit(0)
    assert sorted(widget.plot.records) == [other - 1, other]
    widget.table.select_run(other)
    with qtbot.waitSignal(widget.rerun_requested) as signal:
        widget.rerun_button.click()
    assert signal.args[0].name == "on other" and signal.args[0].model.source == "/models/other-model"


def test_damaged_history_is_reported_on_the_page(panel, studio_home):
    path = History().path
    path.write_bytes(b"garbage" * 200)
    widget = panel()
    assert widget.notice.isVisible() and "damaged" in widget.notice.text()
    assert widget.pages.currentWidget() is widget.empty


def test_model_filter_defaults_to_the_newest_model_until_the_person_chooses(panel, tmp_path):
    widget = panel()
    _fake_run(tmp_path, "a", 100e6, 10.0, source="/models/one")
    widget.refresh()
    assert widget.model_box.currentText() == "All models"  # one model: nothing to filter
    _fake_run(tmp_path, "b", 50e6, 12.0, source="/models/two")
    widget.refresh()
    assert widget.model_box.currentText() == "two"
    widget.model_box.setCurrentIndex(widget.model_box.findData("/models/one"))
    widget.model_box.activated.emit(widget.model_box.currentIndex())
    _fake_run(tmp_path, "c", 40e6, 13.0, source="/models/three")
    widget.refresh()
    assert widget.model_box.currentData() == "/models/one" and list(widget.plot.records) == [1]
