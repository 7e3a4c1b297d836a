"""Plain verdicts on every comparison, and the 'Advanced' fold of the step forms (issue 16), offscreen.

The Run page's result table, the Compare page (and its task section), History's table and the HTML report
show the verdict word for a finished run with the thresholds in the tooltip; the GPTQ form shows bits and
group size, and keeps dampening under a closed 'Advanced' fold; every field of every technique has a plain
label and a tooltip.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import copy  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402

import pytest  # noqa: E402

from core.data.task_rows import TASKS  # noqa: E402
from core.engine.params import param_specs  # noqa: E402
from core.engine.registry import get_technique, techniques  # noqa: E402
from core.eval.compare import read_output_folder  # noqa: E402
from core.eval.verdict import THRESHOLDS  # noqa: E402
from core.history.store import History  # noqa: E402
from core.history.summary import summarize_report  # noqa: E402
from core.io.report_html import build_report_html  # noqa: E402
from gui.screens.compare.panel import ComparePanel  # noqa: E402
from gui.screens.history.panel import HistoryPanel  # noqa: E402
from gui.screens.history.table import COLUMNS  # noqa: E402
from gui.screens.pipeline.param_form import ADVANCED_NOTE, ParamForm  # noqa: E402
from gui.screens.run.summary import VERDICT_MEASURE, ResultTable  # noqa: E402


def _report(ppl_after: float, kl: float, tasks: tuple[float, float] | None = None) -> dict:
    before = {"parameters": 1000, "nonzero_parameters": 1000, "bytes_on_disk": 4_000_000,
              "bytes_in_memory": 4_000_000, "perplexity": {"perplexity": 20.0}}
    after = {"parameters": 1000, "nonzero_parameters": 500, "bytes_on_disk": 2_000_000,
             "bytes_in_memory": 4_000_000, "perplexity": {"perplexity": ppl_after}}
    if tasks is not None:
        info = TASKS["arc_easy"]
        for part, value in zip((before, after), tasks, strict=True):
            part["tasks"] = {"arc_easy": {"title": info.title, "n": 400, "rows_total": info.rows, "acc": value,
                                          "acc_stderr": 0.02, "stderr": 0.02, "headline": "acc",
                                          "chance": info.chance, "subset": "400 of 2376"}}
    return {"recipe": "half", "source": "bundled:smollm2-135m", "task": "causal-lm", "before": before,
            "after": after, "comparison": {"kl_per_token": kl}, "steps": []}


WORSE = _report(25.0, 0.25)  # perplexity +25%, KL 0.25
UNCHANGED = _report(20.4, 0.01)  # +2%, KL 0.01
BROKEN = _report(90.0, 3.0)  # ×4.5, KL 3


def _saved(tmp_path, report: dict, name: str = "result"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "recipe.yaml").write_text("name: half\n")
    return read_output_folder(folder)


# -- Run page --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("report", "word", "figure"), [
    (WORSE, "noticeably worse", "Perplexity rose 25% (20.00 → 25.00)"),
    (UNCHANGED, "nearly unchanged", "Perplexity rose 2.0% (20.00 → 20.40)"),
    (BROKEN, "broken", "Perplexity rose to 4.5 times the original's"),
])
def test_run_summary_shows_the_verdict_first(qtbot, report, word, figure):
    table = ResultTable()
    qtbot.addWidget(table)
    table.show_report(report)
    assert table.item(0, 0).text() == VERDICT_MEASURE
    assert table.text_at(VERDICT_MEASURE, 2) == word
    assert table.text_at(VERDICT_MEASURE, 3).startswith(figure)
    tip = table.item(0, 2).toolTip()
    assert THRESHOLDS in tip and figure in tip
    assert table.text_at("Perplexity", 2) == f"{report['after']['perplexity']['perplexity']:.3f}"  # still there


# -- Compare page ----------------------------------------------------------------------------------------
def test_compare_page_says_the_verdict_with_thresholds(qtbot, tmp_path):
    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.set_run(_saved(tmp_path, WORSE))
    assert not panel.verdict.isHidden()
    text = panel.verdict.text()
    assert "Quality: " in text and ">noticeably worse</span>" in text and "KL 0.25" in text
    assert THRESHOLDS in panel.verdict.toolTip()
    panel.set_run(_saved(tmp_path, BROKEN, "broken"))
    assert ">broken</span>" in panel.verdict.text()
    panel.set_run(None)
    assert panel.verdict.isHidden()


def test_compare_task_section_has_its_own_verdict(qtbot, tmp_path):
    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.set_run(_saved(tmp_path, _report(20.2, 0.01, tasks=(0.60, 0.50))))  # -10 points, error ± 2.8
    section = panel.tasks
    assert "Task accuracy: " in section.verdict.text() and ">noticeably worse</span>" in section.verdict.text()
    assert "fell 10.0 points" in section.verdict.text()
    assert THRESHOLDS in section.verdict.toolTip() and "task accuracy alone" in section.verdict.toolTip()
    # the page's own verdict weighs perplexity and KL too: the task drop still makes it worse
    assert ">noticeably worse</span>" in panel.verdict.text()
    panel.set_run(_saved(tmp_path, _report(20.2, 0.01, tasks=(0.60, 0.59)), "small"))  # -1 point: within error
    assert ">nearly unchanged</span>" in section.verdict.text() and ">nearly unchanged</span>" in panel.verdict.text()


# -- History ---------------------------------------------------------------------------------------------
def _record(tmp_path, name: str, report: dict | None, status: str = "done") -> int:
    from core.engine.recipe import Recipe, Step

    recipe = Recipe(name=name, steps=[Step("magnitude_prune", get_technique("magnitude_prune").config_cls())])
    history = History(recover=False)
    run_id = history.start_run(recipe, tmp_path / name, device="cpu", origin="test")
    history.finish_run(run_id, status, metrics=summarize_report(report) if report else {},
                       message="" if status == "done" else "it broke")
    return run_id


def test_history_table_has_a_quality_column(qtbot, tmp_path):
    _record(tmp_path, "worse", WORSE)
    _record(tmp_path, "same", UNCHANGED)
    _record(tmp_path, "broken", BROKEN)
    _record(tmp_path, "failed", None, status="failed")
    widget = HistoryPanel()
    qtbot.addWidget(widget)
    table = widget.table
    column = COLUMNS.index("Quality")
    by_recipe = {table.item(r, COLUMNS.index("Recipe")).text(): table.item(r, column) for r in range(table.rowCount())}
    assert {name: item.text() for name, item in by_recipe.items()} == {
        "worse": "noticeably worse", "same": "nearly unchanged", "broken": "broken", "failed": "—"}
    tip = by_recipe["worse"].toolTip()
    assert tip.startswith("Perplexity rose 25% (20.00 → 25.00) and its predictions drift") and THRESHOLDS in tip
    assert THRESHOLDS in table.horizontalHeaderItem(column).toolTip()


# -- HTML report -----------------------------------------------------------------------------------------
def test_html_report_states_the_verdict_and_how_it_is_decided(tmp_path):
    html = build_report_html(_saved(tmp_path, WORSE))
    assert "Quality: <span class='level-noticeably-worse'>noticeably worse</span>" in html
    assert "Perplexity rose 25% (20.00 → 25.00)" in html
    assert "How the verdict is decided" in html and "KL above 0.05" in html
    assert html.index("Quality: <span") < html.index("<table>")  # above the comparison table
    nothing = copy.deepcopy(WORSE)
    del nothing["before"]["perplexity"], nothing["after"]["perplexity"], nothing["comparison"]["kl_per_token"]
    assert "<span class='level-not-measured'>not measured</span>" in build_report_html(_saved(tmp_path, nothing, "x"))


# -- the 'Advanced' fold ---------------------------------------------------------------------------------
def _gptq_form(qtbot, config=None) -> ParamForm:
    form = ParamForm(config or get_technique("gptq_quantize").config_cls())
    qtbot.addWidget(form)
    form.show()
    qtbot.waitExposed(form)
    return form


def test_gptq_form_keeps_dampening_under_a_closed_advanced_fold(qtbot):
    form = _gptq_form(qtbot)
    for everyday in ("bits", "group_size"):
        assert form.editors[everyday].isVisible(), everyday
    for expert in ("dampening", "act_order", "clip", "block_size", "static_groups", "true_sequential",
                   "embedding_bits"):
        assert expert in form.expert_fields and not form.editors[expert].isVisible(), expert
    assert not form.advanced_open and form.advanced_button.text() == "Advanced (10)"
    damp_label = form.advanced.layout().labelForField(form.editors["dampening"])
    assert damp_label.text() == "Stabilizer (dampening):"
    assert "numerical stability" in form.editors["dampening"].toolTip()
    form.advanced_button.click()
    assert form.advanced_open and form.editors["dampening"].isVisible() and form.advanced_note.isVisible()
    assert form.advanced_note.text() == ADVANCED_NOTE
    form.set_value("dampening", 0.05)
    assert form.config.dampening == 0.05 and "1 changed from the default" in form.advanced_button.text()
    form.advanced_button.click()
    assert not form.editors["dampening"].isVisible()


def test_a_problem_with_an_expert_setting_opens_the_fold(qtbot):
    config = get_technique("gptq_quantize").config_cls()
    config.dampening = 0.0  # not allowed (must be above 0): e.g. typed into a recipe file
    form = _gptq_form(qtbot, config)
    assert "dampening" in form.error and form.advanced_open and form.editors["dampening"].isVisible()


def test_every_technique_field_has_a_plain_label_and_a_tooltip(qtbot):
    for name, info in techniques().items():
        form = ParamForm(info.config_cls())
        qtbot.addWidget(form)
        specs = param_specs(info.config_cls)
        assert [s for s in specs if not s.expert], f"{name} shows no everyday setting"
        for spec in specs:
            editor = form.editors[spec.name]
            assert spec.help and spec.help in editor.toolTip(), (name, spec.name)
            layout = (form.advanced if spec.expert else form).layout()
            label = layout.labelForField(editor)
            assert label is not None and label.toolTip() == editor.toolTip(), (name, spec.name)
            assert label.text() == f"{spec.label}:", (name, spec.name)
        # every field has a label written for people, not only its recipe key with a capital letter
        unlabelled = [f.name for f in dataclasses.fields(info.config_cls) if not f.metadata.get("label")]
        assert not unlabelled, (name, unlabelled)
        assert form.advanced_button.isHidden() == (not form.expert_fields)


def test_recipe_keys_are_unchanged():
    """Plain-words labels did not rename a recipe key: every key older recipes use is still there, in order
    (quantize_embedding and embedding_bits were added for issue 20, grid for issue 22; recipes without them get the
    defaults)."""
    config = get_technique("gptq_quantize").config_cls()
    keys = list(config.__dataclass_fields__)
    old = ["bits", "group_size", "symmetric", "clip", "targets", "ignore", "act_order", "dampening", "block_size",
           "static_groups", "true_sequential"]
    assert [key for key in keys if key in old] == old
    assert keys == [*old[:6], "quantize_embedding", "embedding_bits", *old[6:], "grid"]  # grid: issue 22


def test_run_page_at_1024_puts_the_verdict_above_a_table_of_numbers(qtbot, tmp_path):
    """At 1024×700 the verdict row's reason used to wrap into a narrow fourth column, one word per line."""
    from gui.main_window import STEPS, MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1024, 700)
    window.show()
    qtbot.waitExposed(window)
    window.nav.setCurrentRow(STEPS.index("Run"))
    panel = window.run_panel
    panel.output_dir = tmp_path
    panel._show_result(WORSE)
    qtbot.wait(50)
    assert "noticeably worse" in panel.summary.text() and "Perplexity rose 25%" in panel.summary.text()
    assert THRESHOLDS in panel.summary.toolTip()
    table = panel.result_table
    assert table.width() < ResultTable.NARROW_PX and table.isColumnHidden(3)  # explanations: in each row's tooltip
    assert table.text_at("Perplexity", 2) == "25.000" and table.item(1, 0).toolTip()
    window.resize(1600, 1000)
    qtbot.wait(50)
    assert not table.isColumnHidden(3)  # room enough: the explanations are back
