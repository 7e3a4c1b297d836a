"""Plain verdicts (issue 16): 'nearly unchanged / noticeably worse / broken' from the measured numbers.

Table-driven cases sit on both sides of every threshold; two real runs of the bundled SmolLM2-135M
(the original against itself, and 90% magnitude pruning) must read 'nearly unchanged' and 'broken'.
"""

from __future__ import annotations

import math

import pytest

from core.data.samples import datasets_ready
from core.eval.verdict import (
    BETTER,
    BROKEN,
    INPUTS_KEY,
    NOT_MEASURED,
    UNCHANGED,
    WORSE,
    TaskMeasure,
    inputs_verdict,
    metrics_verdict,
    quality_inputs,
    quality_verdict,
    report_verdict,
)


# -- perplexity ratio and KL at their thresholds ------------------------------------------------------------
@pytest.mark.parametrize(("before", "after", "level"), [
    (20.0, 20.0, UNCHANGED),
    (20.0, 21.0, UNCHANGED),  # ratio exactly 1.05
    (20.0, 21.002, WORSE),  # just above 1.05
    (20.0, 40.0, WORSE),  # exactly doubled
    (20.0, 80.0, WORSE),  # four times: fluent text still (Wanda 50% on the bundled model: ×2.18)
    (20.0, 80.002, BROKEN),  # more than four times
    (20.0, math.inf, BROKEN),  # a model whose perplexity overflows
    (20.0, 19.0, UNCHANGED),  # exactly 5% lower
    (20.0, 18.998, BETTER),  # more than 5% lower
])
def test_perplexity_thresholds(before, after, level):
    verdict = quality_verdict(before, after)
    assert verdict.level == level, verdict.reason
    assert "perplexity" in verdict.reason.lower()


@pytest.mark.parametrize(("kl", "level"), [
    (0.0, UNCHANGED), (0.05, UNCHANGED), (0.0501, WORSE), (2.0, WORSE), (2.0001, BROKEN), (12.6, BROKEN),
])
def test_kl_thresholds(kl, level):
    verdict = quality_verdict(kl=kl)
    assert verdict.level == level, verdict.reason
    assert "KL" in verdict.reason


def test_the_worst_measure_decides_and_is_named_first():
    verdict = quality_verdict(20.0, 20.6, kl=0.3)  # perplexity +3% (fine), KL 0.3 (worse)
    assert verdict.level == WORSE
    assert verdict.reason.startswith("Its predictions drift from the original's (KL 0.3)"), verdict.reason
    assert "perplexity rose 3.0% (20.00 → 20.60)" in verdict.reason
    assert quality_verdict(20.0, 100.0, kl=0.01).level == BROKEN  # ×5 perplexity outweighs a small KL
    # 'better' only when nothing is worse: a 10% lower perplexity with drifting predictions is not better
    assert quality_verdict(20.0, 18.0, kl=0.2).level == WORSE
    assert quality_verdict(20.0, 18.0, kl=0.01).level == BETTER


def test_reason_names_the_deciding_numbers():
    assert quality_verdict(20.0, 20.6, kl=0.01).reason == (
        "Perplexity rose 3.0% (20.00 → 20.60) and its predictions agree closely with the original's (KL 0.01).")
    assert quality_verdict(17.37, 4_444_427.0, kl=12.56).reason == (
        "Perplexity rose to 255,868 times the original's (17.37 → 4,444,427) and its predictions have little "
        "left in common with the original's (KL 12.6).")


# -- task accuracy ---------------------------------------------------------------------------------------------
def _task(before: float, after: float, error: float | None = 0.125, chance: float | None = 0.25,
          before_stderr: float | None = 0.0625, title: str = "ARC-Easy") -> TaskMeasure:
    return TaskMeasure(title, before, after, error, chance, before_stderr)


@pytest.mark.parametrize(("tasks", "level"), [
    # error bar 0.125: a change counts beyond 2 x 0.125 = 0.25 (exact binary fractions, so no rounding)
    ([_task(0.75, 0.5)], UNCHANGED),  # down exactly 2 standard errors
    ([_task(0.75, 0.4375)], WORSE),  # down more than 2 standard errors
    ([_task(0.5, 0.8125)], BETTER),  # up more than 2 standard errors
    ([_task(0.5, 0.25, chance=0.25)], BROKEN),  # at guessing, where the original was clearly above it
    ([_task(0.5, 0.125, chance=0.25)], BROKEN),  # below guessing
    ([_task(0.3125, 0.25, chance=0.25)], UNCHANGED),  # the original itself is within 2 stderr of guessing
    # a tiny error bar (a huge question set): a drop must still be at least 1 point
    ([_task(0.5, 0.4921875, error=0.001)], UNCHANGED),  # -0.78 points
    ([_task(0.5, 0.484375, error=0.001)], WORSE),  # -1.6 points
    # the average of two tasks decides: -0.25 on one, +0.25 on the other
    ([_task(0.75, 0.5), _task(0.5, 0.75, title="PIQA", chance=0.5)], UNCHANGED),
])
def test_task_thresholds(tasks, level):
    verdict = quality_verdict(tasks=tasks)
    assert verdict.level == level, verdict.reason


def test_task_reasons_say_what_was_decided():
    worse = quality_verdict(tasks=[_task(0.75, 0.4375)])
    assert worse.reason == "Task accuracy fell 31.2 points (ARC-Easy; error bars ± 12.5)."
    broken = quality_verdict(20.0, 20.2, 0.01, [_task(0.5, 0.25)])
    assert broken.level == BROKEN
    assert broken.reason.startswith("It answers ARC-Easy no better than guessing (25.0%; guessing scores 25%, the "
                                    "original 50.0%);"), broken.reason
    unjudged = quality_verdict(tasks=[_task(0.75, 0.5, error=None)])
    assert unjudged.level == NOT_MEASURED and "not judged" in unjudged.reason


# -- what it was based on ---------------------------------------------------------------------------------------
def test_nothing_measured_says_so():
    verdict = quality_verdict()
    assert verdict.level == NOT_MEASURED and not verdict.measured
    assert "evaluation settings" in verdict.reason
    assert verdict.basis == ("Nothing that shows quality was measured. Not measured: perplexity, KL to the "
                             "original and task accuracy.")


def test_basis_names_what_was_and_was_not_measured():
    assert quality_verdict(20.0, 20.2).basis == ("Based on perplexity. Not measured: KL to the original and task "
                                                 "accuracy.")
    both = quality_verdict(kl=0.01, tasks=[_task(0.75, 0.75), _task(0.5, 0.5, title="PIQA", chance=0.5)])
    assert both.basis == "Based on KL to the original and task accuracy (2 tasks). Not measured: perplexity."


def test_tooltip_has_reason_basis_and_thresholds():
    verdict = quality_verdict(20.0, 21.5, 0.02)
    for words in ("perplexity within 5%", "KL above 0.05", "more than 4 times the original's", "KL above 2",
                  "no better than guessing", "2 standard errors", verdict.reason, verdict.basis):
        assert words in verdict.tooltip, words


# -- from a run report and from History's metrics -----------------------------------------------------------
def _score(value: float, stderr: float, answers: str, chance: float = 0.25) -> dict:
    return {"title": "ARC-Easy", "n": len(answers), "rows_total": 2376, "acc": value, "acc_stderr": stderr,
            "headline": "acc", "chance": chance, "stderr": stderr, "answers": answers}


def _report() -> dict:
    # 8 questions: the original answers 6 right, the result 2 (the 4 it lost were right before)
    before = {"perplexity": {"perplexity": 20.0}, "tasks": {"arc_easy": _score(0.75, 0.15, "11111100")}}
    after = {"perplexity": {"perplexity": 20.4}, "tasks": {"arc_easy": _score(0.25, 0.15, "00000011")}}
    return {"task": "causal-lm", "before": before, "after": after, "comparison": {"kl_per_token": 0.01}}


def test_report_verdict_uses_perplexity_kl_and_tasks():
    verdict = report_verdict(_report())
    assert verdict.level == BROKEN  # answers at guessing (25%) where the original scored 75% ± 15
    assert "ARC-Easy no better than guessing" in verdict.reason
    assert verdict.basis == "Based on perplexity, KL to the original and task accuracy (ARC-Easy)."
    assert report_verdict(None).level == NOT_MEASURED


def test_history_metrics_keep_the_inputs_and_old_records_fall_back():
    import json

    from core.history.summary import summarize_report

    metrics = json.loads(json.dumps(summarize_report(_report())))  # as the history database stores it
    assert metrics[INPUTS_KEY] == quality_inputs(_report())
    assert metrics_verdict(metrics) == report_verdict(_report())
    old = {"perplexity_before": 20.0, "perplexity_after": 90.0}  # recorded before verdicts
    assert metrics_verdict(old).level == BROKEN
    assert inputs_verdict({}).level == NOT_MEASURED


def test_classifier_accuracy_counts_as_a_task():
    def part(accuracy: float) -> dict:
        return {"classification": {"accuracy": accuracy, "examples": 400,
                                   "per_class": {"rotten": {"support": 200}, "fresh": {"support": 200}}}}
    report = {"task": "text-classification", "before": part(0.85), "after": part(0.84), "comparison": {}}
    assert report_verdict(report).level == UNCHANGED  # -1 point, error bar ± 2.5
    report["after"] = part(0.75)
    assert report_verdict(report).level == WORSE  # -10 points
    report["after"] = part(0.5)
    verdict = report_verdict(report)
    assert verdict.level == BROKEN and "the labelled test set no better than guessing" in verdict.reason


# -- the bundled model, for real ------------------------------------------------------------------------------
REAL = """
name: verdict {name}
model: {{source: "bundled:smollm2-135m"}}
data: {{sequence_length: 64}}
evaluation: {{max_windows: 3}}
steps: [{{technique: magnitude_prune, params: {{sparsity: {sparsity}}}}}]
"""


@pytest.mark.slow
@pytest.mark.skipif(not datasets_ready(), reason="bundled datasets missing: run `make data`")
@pytest.mark.parametrize(("sparsity", "level"), [(0.0, UNCHANGED), (0.9, BROKEN)])
def test_real_runs_of_the_bundled_model(tmp_path, sparsity, level):
    """Pruning nothing (the original against itself) is 'nearly unchanged'; 90% pruning is 'broken'."""
    from core.engine.recipe import recipe_from_text
    from core.engine.runner import run_recipe
    from tests.helpers import collect

    recipe = recipe_from_text(REAL.format(name=sparsity, sparsity=sparsity))
    _, report = collect(run_recipe(recipe, tmp_path / "out"))
    verdict = report_verdict(report)
    assert verdict.level == level, (verdict.reason, report["comparison"])
    assert verdict.basis == "Based on perplexity and KL to the original. Not measured: task accuracy."
