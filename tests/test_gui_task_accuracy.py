"""Task accuracy in the app (offscreen, no model): the Pipeline's task boxes bound to the recipe, the
Compare page's task section for a made-up report, and History's 'Average task accuracy'."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json  # noqa: E402

import pytest  # noqa: E402

import gui.screens.pipeline.task_picker as task_picker  # noqa: E402
from core.data.task_rows import TASKS  # noqa: E402
from core.engine.recipe import EvalSpec, Recipe, recipe_from_text  # noqa: E402
from core.eval.compare import read_output_folder  # noqa: E402
from core.eval.task_time import estimate_task_seconds  # noqa: E402
from core.history.store import History  # noqa: E402
from core.history.summary import summarize_report  # noqa: E402
from gui.screens.compare.panel import ComparePanel  # noqa: E402
from gui.screens.history.panel import HistoryPanel  # noqa: E402
from gui.screens.history.style import QUALITIES  # noqa: E402
from gui.screens.history.table import COLUMNS  # noqa: E402
from gui.screens.pipeline.data_box import DataBox  # noqa: E402
from gui.screens.pipeline.panel import ModelContext, PipelinePanel  # noqa: E402
from gui.widgets.formatting import format_duration  # noqa: E402


@pytest.fixture
def installed(monkeypatch):
    """The task questions count as installed (the boxes are usable whatever this machine has)."""
    monkeypatch.setattr(task_picker, "tasks_ready", lambda: True)


def _score(task: str, value: float, stderr: float, *, n: int = 250, other: float = 0.9) -> dict:
    info = TASKS[task]
    acc, acc_norm = (value, other) if info.headline == "acc" else (other, value)
    return {"task": task, "title": info.title, "n": n, "rows_total": info.rows, "acc": acc, "acc_stderr": stderr,
            "acc_norm": acc_norm, "acc_norm_stderr": stderr, "headline": info.headline, "chance": info.chance,
            "seconds": 3.0, "subset": "all" if n >= info.rows else f"{n} of {info.rows} drawn at random (seed 0)",
            "stderr": stderr}


def _report(tasks: bool = True) -> dict:
    before = {"parameters": 1000, "nonzero_parameters": 1000, "bytes_on_disk": 4_000_000,
              "bytes_in_memory": 4_000_000, "perplexity": {"perplexity": 20.0}}
    after = {"parameters": 1000, "nonzero_parameters": 500, "bytes_on_disk": 2_000_000,
             "bytes_in_memory": 4_000_000, "perplexity": {"perplexity": 25.0}}
    if tasks:
        before["tasks"] = {"arc_easy": _score("arc_easy", 0.60, 0.03),
                           "boolq": _score("boolq", 0.64, 0.02, n=3270)}
        after["tasks"] = {"arc_easy": _score("arc_easy", 0.55, 0.03),
                          "boolq": _score("boolq", 0.62, 0.02, n=3270)}
    return {"recipe": "q", "source": "bundled:smollm2-135m", "task": "causal-lm", "before": before,
            "after": after, "comparison": {"kl_per_token": 0.1}, "steps": []}


# ----------------------------------------------------------------------------------- Pipeline
def test_ticking_boxes_writes_the_recipe_and_keeps_own_files(qtbot, installed):
    box = DataBox()
    qtbot.addWidget(box)
    evaluation = EvalSpec(tasks=["/data/mine.jsonl"])
    box.set_specs(box.data, evaluation)
    picker = box.tasks
    assert all(b.isEnabled() and not b.isChecked() for b in picker.boxes.values())
    picker.boxes["piqa"].setChecked(True)
    picker.boxes["arc_easy"].setChecked(True)
    assert box.evaluation is evaluation and evaluation.tasks == ["arc_easy", "piqa", "/data/mine.jsonl"]
    assert "mine.jsonl" in picker.own_label.text() and not picker.clear_button.isHidden()
    picker.boxes["piqa"].setChecked(False)
    assert evaluation.tasks == ["arc_easy", "/data/mine.jsonl"]
    picker.clear_own_files()
    assert evaluation.tasks == ["arc_easy"] and picker.clear_button.isHidden()
    picker.limit.setValue(100)
    assert evaluation.task_limit == 100
    picker.limit.setValue(0)
    assert evaluation.task_limit == 0 and picker.limit.text() == "all"
    assert "Guessing scores 25%" in picker.boxes["arc_easy"].toolTip().replace("guessing", "Guessing")
    assert "CC BY-SA 4.0" in picker.boxes["arc_easy"].toolTip() and "2,376 questions" in picker.boxes["arc_easy"].toolTip()


def test_a_loaded_recipe_ticks_its_boxes_and_round_trips(qtbot, installed):
    panel = PipelinePanel(lambda: ModelContext("bundled:smollm2-135m"))
    qtbot.addWidget(panel)
    recipe = Recipe(name="t", evaluation=EvalSpec(tasks=["boolq", "hellaswag", "/data/mine.jsonl"], task_limit=80))
    panel.apply_recipe(recipe_from_text(recipe.to_yaml()))
    picker = panel.data_box.tasks
    assert [n for n, b in picker.boxes.items() if b.isChecked()] == ["hellaswag", "boolq"]
    assert picker.limit.value() == 80 and "mine.jsonl" in picker.own_label.text()
    rebuilt = panel.build_recipe()
    assert rebuilt.evaluation.tasks == ["boolq", "hellaswag", "/data/mine.jsonl"]
    assert rebuilt.evaluation.task_limit == 80
    picker.boxes["boolq"].setChecked(False)  # an edit writes the boxes' order, own files kept last
    assert panel.build_recipe().evaluation.tasks == ["hellaswag", "/data/mine.jsonl"]
    panel.new_recipe()
    assert not any(b.isChecked() for b in picker.boxes.values()) and picker.limit.value() == 250


def test_time_line_estimates_both_models_or_says_it_depends(qtbot, installed):
    box = DataBox()
    qtbot.addWidget(box)
    picker = box.tasks
    assert "No task is scored" in picker.time_line.text()
    picker.boxes["hellaswag"].setChecked(True)
    assert "depends on the model" in picker.time_line.text() and picker.estimated_seconds() is None
    picker.set_model(135_000_000, "cpu", "causal-lm")
    once = estimate_task_seconds(["hellaswag"], 250, 135_000_000, "cpu")
    assert picker.estimated_seconds() == pytest.approx(2 * once)
    assert f"adds roughly {format_duration(2 * once)} on cpu" in picker.time_line.text()
    assert f"2 × {format_duration(once)}" in picker.time_line.text()
    picker.set_model(135_000_000, "cpu", "sequence-classification")
    assert not picker.boxes["piqa"].isEnabled() and "language models" in picker.time_line.text()
    assert picker.estimated_seconds() is None


def test_tasks_not_installed_disable_the_boxes_and_say_make_data(qtbot, monkeypatch):
    monkeypatch.setattr(task_picker, "tasks_ready", lambda: False)
    box = DataBox()
    qtbot.addWidget(box)
    assert not any(b.isEnabled() for b in box.tasks.boxes.values())
    assert "make data" in box.tasks.time_line.text()
    assert box.errors() == []
    box.set_specs(box.data, EvalSpec(tasks=["piqa"]))  # a recipe that asks for them cannot run
    assert any("make data" in e and "PIQA" in e for e in box.errors())


def test_the_pre_flight_time_includes_the_tasks(qtbot, installed):
    from core.engine.recipe import Step
    from core.engine.registry import get_technique
    from core.models.model_info import ModelSummary

    summary = ModelSummary("LlamaForCausalLM", "llama", 30, 576, 49152, 135_000_000, 135_000_000, 540_000_000,
                           270_000_000, 32.0, "float32")
    panel = PipelinePanel(lambda: ModelContext("bundled:smollm2-135m", summary=summary))
    qtbot.addWidget(panel)
    panel.step_list.add_step(Step("magnitude_prune", get_technique("magnitude_prune").config_cls()))
    panel.update_estimate()
    without = panel.estimate_box.label.text()
    panel.data_box.tasks.boxes["arc_easy"].setChecked(True)
    panel.update_estimate()
    seconds = panel.data_box.tasks.estimated_seconds()
    assert seconds and "scoring the tasks" not in without
    assert f"of which about {format_duration(seconds)} scoring the tasks" in panel.estimate_box.label.text()


# ----------------------------------------------------------------------------------- Compare
def _saved(tmp_path, report):
    folder = tmp_path / "result"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "recipe.yaml").write_text("name: q\n")
    return read_output_folder(folder)


def test_compare_shows_each_task_side_by_side(qtbot, tmp_path):
    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.set_run(_saved(tmp_path, _report()))
    section = panel.tasks
    assert not section.isHidden()
    table = section.table
    assert table.text_at("ARC-Easy", 1) == "250 of 2,376" and "random subset" in table.item(0, 1).toolTip()
    assert section.note.text().startswith("ARC-Easy was scored on a random subset")  # BoolQ: all of it
    assert table.text_at("ARC-Easy", 2) == "60.0% ± 3.0" and table.text_at("ARC-Easy", 3) == "55.0% ± 3.0"
    assert table.text_at("ARC-Easy", 4) == "−5.0 points" and table.text_at("ARC-Easy", 5) == "25%"
    assert table.text_at("BoolQ", 1) == "all 3,270" and table.text_at("BoolQ", 2) == "64.0% ± 2.0"
    # average 0.585 of 0.62 = 94%; the difference 3.5 points against sqrt(2) x sqrt(0.03² + 0.02²) / 2 = 2.5
    text = section.sentence.text()
    assert "The result keeps 94% of the original's accuracy on these tasks" in text
    assert "58.5% for the result vs 62.0% for the original" in text
    assert "larger than the measurement's error bars (± 2.5 points)" in text
    chart = section.chart
    assert list(chart.teacher_bars.opts["width"]) == pytest.approx([60.0, 64.0])
    assert list(chart.student_bars.opts["width"]) == pytest.approx([55.0, 62.0])
    assert list(chart.student_errors.opts["width"]) == pytest.approx([6.0, 4.0])  # ± one standard error
    x, _y = chart.chance.getData()
    assert list(x) == pytest.approx([25.0, 25.0, 50.0, 50.0])
    assert any("Task accuracy" in caption for caption in panel.png_images())


def test_compare_without_tasks_hides_the_section(qtbot, tmp_path):
    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.set_run(_saved(tmp_path, _report(tasks=False)))
    assert panel.tasks.isHidden() and panel.tasks.table.rowCount() == 0
    assert not any("Task accuracy" in caption for caption in panel.png_images())


# ----------------------------------------------------------------------------------- History
def test_history_plots_the_average_task_accuracy(qtbot, tmp_path):
    from core.engine.recipe import Step
    from core.engine.registry import get_technique

    history = History(recover=False)
    ids = []
    for name, report in (("with tasks", _report()), ("without tasks", _report(tasks=False))):
        recipe = Recipe(name=name, steps=[Step("magnitude_prune", get_technique("magnitude_prune").config_cls())])
        run_id = history.start_run(recipe, tmp_path / name, device="cpu", origin="test")
        history.finish_run(run_id, "done", metrics=summarize_report(report))
        ids.append(run_id)
    panel = HistoryPanel()
    qtbot.addWidget(panel)
    panel.resize(1100, 750)
    quality = next(q for q in QUALITIES if q.label == "Average task accuracy")
    assert quality.higher_is_better
    panel.quality_box.setCurrentIndex(QUALITIES.index(quality))
    panel._quality_picked(0)
    column = COLUMNS.index("Quality after")
    cells = {panel.table.item(r, 0).text(): panel.table.item(r, column) for r in range(panel.table.rowCount())}
    assert cells[str(ids[0])].text() == "58.5%"  # mean of the headline figures 0.55 (acc_norm) and 0.62 (acc)
    assert "arc_easy, boolq" in cells[str(ids[0])].toolTip()
    assert cells[str(ids[1])].text() == "—"
    assert panel.table.horizontalHeaderItem(column).text() == "Average task accuracy after"
    assert "1 finished run plotted" in panel.plot.note.text() and "has no average task accuracy" in panel.plot.note.text()
