"""The Pipeline and Run pages, with pytest-qt on the offscreen platform and the tiny model."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import QModelIndex, Qt, QTimer  # noqa: E402

from gui.main_window import STEPS  # noqa: E402
from tests.helpers import choose_model, slowed, small_data  # noqa: E402

pytest_plugins = ["tests.gui_fixtures"]  # the dialogs and window fixtures
TIMEOUT_MS = 120_000



def _add_from_palette(qtbot, panel, name):
    item = panel.palette_view.item_for(name)
    assert item is not None and item.flags() & Qt.ItemFlag.ItemIsEnabled
    panel.palette_view.setCurrentItem(item)
    panel.palette_view.itemActivated.emit(item, 0)
    return panel.step_list.current_step()


def _prepare_tiny_run(qtbot, window, model_dir, text_file, out_root):
    choose_model(qtbot, window, model_dir, TIMEOUT_MS)
    panel = window.pipeline_panel
    _add_from_palette(qtbot, panel, "magnitude_prune")
    small_data(panel.data_box, text_file)
    panel.recipe_bar.output.setText(str(out_root))
    return panel


def test_add_edit_reorder_remove_steps(qtbot, window, dialogs):
    panel = window.pipeline_panel
    assert window.nav.item(STEPS.index("Pipeline")).toolTip() and panel.palette_view.toolTip()
    step = _add_from_palette(qtbot, panel, "magnitude_prune")
    assert step.technique == "magnitude_prune" and panel.form is not None
    spin = panel.form.editors["sparsity"]
    assert "Allowed" in spin.toolTip() and 0.999 <= spin.maximum() < 1.0  # sparsity < 1: 1.0 is left out
    assert all(editor.toolTip() for editor in panel.form.editors.values())
    panel.form.set_value("sparsity", 0.3)
    assert step.config.sparsity == 0.3 and not panel.form.error
    assert "sparsity 0.3" in panel.step_list.item(0).text()
    step.config.sparsity = 1.0  # as a recipe file may say (the box itself cannot hold 1.0)
    panel.form.check()
    assert "sparsity = 1.0 is not allowed" in panel.form.error and panel.form.error_label.isVisibleTo(panel)
    panel.update_estimate()
    assert "not allowed" in panel.problems.text()
    assert window.run_pipeline() is None and window.run_panel.job is None  # refused before any work
    assert "sparsity = 1.0 is not allowed" in dialogs.pop().text()
    panel.form.set_value("sparsity", 0.4)
    assert not panel.form.error and panel.form.error_label.isHidden()

    _add_from_palette(qtbot, panel, "wanda_prune")
    assert [s.technique for s in panel.step_list.ordered_steps()] == ["magnitude_prune", "wanda_prune"]
    panel.step_list.move_current(-1)
    assert [s.technique for s in panel.step_list.ordered_steps()] == ["wanda_prune", "magnitude_prune"]
    assert panel.step_list.item(0).text().startswith("1. Wanda")
    moved = []
    panel.step_list.steps_changed.connect(lambda: moved.append(True))
    assert panel.step_list.model().moveRow(QModelIndex(), 1, QModelIndex(), 0)  # what a drag does
    assert [s.technique for s in panel.step_list.ordered_steps()] == ["magnitude_prune", "wanda_prune"]
    assert panel.step_list.item(0).text().startswith("1. Magnitude") and moved
    panel.step_list.setCurrentRow(1)
    panel.step_list.move_current(-1)
    assert [s.technique for s in panel.step_list.ordered_steps()] == ["wanda_prune", "magnitude_prune"]
    panel.step_list.item(1).setCheckState(Qt.CheckState.Unchecked)
    assert not panel.step_list.step_at(1).enabled and "(off)" in panel.step_list.item(1).text()
    assert [s.enabled for s in panel.build_recipe().steps] == [True, False]
    panel.step_list.setCurrentRow(0)
    panel.step_list.setFocus()
    qtbot.keyClick(panel.step_list, Qt.Key.Key_Delete)
    assert [s.technique for s in panel.step_list.ordered_steps()] == ["magnitude_prune"]
    assert panel.step_list.step_at(0).config.sparsity == 0.4
    assert not dialogs


def test_every_registered_technique_gets_a_valid_form(qtbot):
    """Techniques added under core/techniques/ appear with no app code: each builds a form."""
    from core.engine.registry import techniques
    from gui.screens.pipeline.param_form import ParamForm

    for name, info in techniques().items():
        form = ParamForm(info.config_cls())
        qtbot.addWidget(form)
        assert not form.error, name
        assert all(editor.toolTip() for editor in form.editors.values()), name


def test_unavailable_technique_is_greyed_with_reason(qtbot, window):
    from core.engine.registry import Needs
    from gui.jobs import Environment

    gpu_only = replace(window.environment.techniques["magnitude_prune"], name="gpu_only", title="GPU thing",
                       needs=Needs(gpu=True))
    window.set_environment(Environment(window.environment.devices, {**window.environment.techniques,
                                                                     "gpu_only": gpu_only}))
    item = window.pipeline_panel.palette_view.item_for("gpu_only")
    assert not item.flags() & Qt.ItemFlag.ItemIsEnabled
    assert "needs an NVIDIA GPU" in item.toolTip(0)


def test_presets_load_and_yaml_round_trip(qtbot, window, dialogs, tmp_path):
    from core.engine.recipe import load_recipe

    panel = window.pipeline_panel
    bar = panel.recipe_bar
    names = [bar.presets.itemText(i) for i in range(1, bar.presets.count())]
    assert len(names) >= 3 and any("SparseGPT" in n for n in names) and any("classifier" in n for n in names)
    source = window.model_context().source
    for index in range(1, bar.presets.count()):
        bar.presets.activated.emit(index)
        expected = load_recipe(bar.presets.itemData(index))
        got = panel.build_recipe()
        assert got.name == expected.name
        assert [s.to_dict() for s in got.steps] == [s.to_dict() for s in expected.steps]
        if "classifier" in got.name:  # a preset naming its own model switches to it
            assert window.model_context().source == "bundled:minilm-l6"
            assert window.model_panel.task() == "sequence-classification"
            window.model_panel.set_source(source)
            window.model_panel.set_task("causal-lm")
        else:  # the others apply to the model already chosen
            assert window.model_context().source == source
    assert not dialogs

    panel.step_list.setCurrentRow(0)
    panel.form.set_value("sparsity", 0.25)
    before = panel.build_recipe().to_dict()
    path = tmp_path / "mine.yaml"
    panel.save_file(path)
    panel.new_recipe()
    assert panel.step_list.count() == 0
    panel.load_file(path)
    assert panel.build_recipe().to_dict() == before
    assert not dialogs


def test_output_folder_never_reuses_an_existing_one(window, tmp_path):
    """A re-run within the same second gets its own folder instead of failing on the first one's."""
    panel = window.pipeline_panel
    panel.recipe_bar.output.setText(str(tmp_path))
    recipe = panel.build_recipe()
    first = panel.output_dir(recipe)
    first.mkdir()
    second = panel.output_dir(recipe)
    assert second != first and not second.exists()
    if second.name.startswith(first.name):  # the same second: numbered after the first
        assert second.name == f"{first.name}-2"


def test_estimate_warns_when_memory_will_not_fit(qtbot, window, tiny_llama_dir):
    from core.models.devices import Device
    from gui.jobs import Environment

    model = window.model_panel
    model.set_source(str(tiny_llama_dir))
    with qtbot.waitSignal(model.model_loaded, timeout=TIMEOUT_MS):
        model.load()
    panel = window.pipeline_panel
    _add_from_palette(qtbot, panel, "magnitude_prune")
    panel.update_estimate()
    text = panel.estimate_box.label.text()
    assert "Output size" in text and "does not shrink the saved file" in text and panel.estimate_box.fits
    window.environment = Environment([Device("cpu", "CPU", 1000, 2000)], window.environment.techniques)
    panel.update_estimate()
    assert not panel.estimate_box.fits and "will probably not fit" in panel.estimate_box.label.text()


def test_run_end_to_end_with_live_plots(qtbot, window, dialogs, tiny_llama_dir, text_file, tmp_path):
    from core.models.loading import load_model

    _prepare_tiny_run(qtbot, window, tiny_llama_dir, text_file, tmp_path / "out")
    run = window.run_panel
    started = time.monotonic()
    ticks: list[float] = [started]
    heartbeat = QTimer(interval=20, timeout=lambda: ticks.append(time.monotonic()))
    heartbeat.start()
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert window.stack.currentWidget() is run
    assert run.is_busy() and not run.run_button.isEnabled() and run.cancel_button.isEnabled()
    with qtbot.waitSignal(run.run_finished, timeout=TIMEOUT_MS) as blocker:
        pass
    heartbeat.stop()
    ticks.append(time.monotonic())
    qtbot.waitUntil(lambda: not run.is_busy())
    assert not dialogs, [d.text() for d in dialogs]
    # The event loop kept ticking for the whole run (the work happened in the worker thread).
    longest_stall = max(b - a for a, b in zip(ticks, ticks[1:], strict=False))
    assert longest_stall < 3.0, f"UI stalled {longest_stall:.2f} s during a {ticks[-1] - started:.2f} s run"

    plots = run.plots
    assert len(plots.size_curve.xData) == 2  # before, after step 1
    perplexity = plots.quality["perplexity"][1]
    assert list(perplexity.xData) == [0, 1] and perplexity.yData[0] == 0  # change from the original, in %
    assert len(plots.bars.opts["height"]) == 14 and plots.bars.opts["height"].max() == pytest.approx(0.5)
    assert "Sparsity per layer" in plots.layer_plot.plotItem.titleLabel.text
    assert not plots.loss and plots.loss_plot.isHidden()  # no distillation step: no loss, no empty chart

    report = blocker.args[0]
    assert run.output_dir.is_dir() and run.open_button.isEnabled()
    table = run.result_table
    measures = [table.item(r, 0).text() for r in range(table.rowCount())]
    assert {"Perplexity", "Non-zero parameters", "Size on disk", "KL to original"} <= set(measures)
    assert all(table.item(r, 3).text() for r in range(table.rowCount()))  # each says what it measures
    assert "Saved to" in run.summary.text()
    assert "Done" in run.status.text() and run.overall_bar.value() == 1000
    assert report["after"]["nonzero_parameters"] < report["before"]["nonzero_parameters"]
    ppl_before, ppl_after = (report[side]["perplexity"]["perplexity"] for side in ("before", "after"))
    assert perplexity.yData[1] == pytest.approx(100 * (ppl_after / ppl_before - 1))
    loaded = load_model(str(run.output_dir))
    assert sum(p.numel() for p in loaded.model.parameters()) == report["after"]["parameters"]


def test_a_refused_output_is_the_same_sentence_in_a_dialog(qtbot, window, dialogs, tiny_llama_dir, text_file,
                                                           tmp_path):
    """Results put inside the model's own folder: the Run page says what the CLI says, and creates nothing."""
    from core.engine.runner import run_inputs
    from core.io.output_rules import check_output_place
    from tests.helpers import folder_digest

    before = folder_digest(tiny_llama_dir)
    _prepare_tiny_run(qtbot, window, tiny_llama_dir, text_file, tiny_llama_dir / "results")
    assert window.run_pipeline() is None and len(dialogs) == 1
    recipe = window.pipeline_panel.build_recipe()
    with pytest.raises(Exception) as refused:  # the engine's sentence for the same place (the CLI prints it)
        check_output_place(tiny_llama_dir / "results" / "x", run_inputs(recipe))
    line = str(refused.value)
    text = dialogs[0].text()
    assert "would be inside the source model" in line
    assert text.startswith("The output ") and text.split(" would be ")[1] == line.split(" would be ")[1]
    assert dialogs[0].informativeText().startswith("What to do:") and window.isVisible()
    assert folder_digest(tiny_llama_dir) == before and not (tiny_llama_dir / "results").exists()


def test_cancel_mid_run_leaves_no_output(qtbot, window, dialogs, tiny_llama_dir, text_file, tmp_path, monkeypatch):
    import gui.jobs

    monkeypatch.setattr(gui.jobs, "run_pipeline", slowed(gui.jobs.run_pipeline, 0.05))
    _prepare_tiny_run(qtbot, window, tiny_llama_dir, text_file, tmp_path / "out")
    run = window.run_panel
    job = window.run_pipeline()
    qtbot.waitUntil(lambda: bool(run.plots.layer_values), timeout=TIMEOUT_MS)
    with qtbot.waitSignal(job.cancelled, timeout=TIMEOUT_MS):
        qtbot.keyClick(window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not run.is_busy())
    assert run.status.text() == "Cancelled — nothing was written."
    assert not run.output_dir.exists()
    assert not any((tmp_path / "out").iterdir())  # no partial folder either
    assert run.run_button.isEnabled() and not run.open_button.isEnabled() and not dialogs
    # the time left of a run that will not go on is gone (issue 16, item 3), and no output path is named
    run.progress.refresh()
    qtbot.wait(1100)  # the progress clock ticks every second: it must not bring the estimate back
    for label in (run.progress.overall_label, run.progress.stage_label):
        assert "left" not in label.text() and "estimating" not in label.text(), label.text()
    assert "stopped at" in run.progress.overall_label.text()
    assert str(run.output_dir) not in run.status.text() + run.summary.text()
