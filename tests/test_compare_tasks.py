"""Task accuracy as the app reports it: rows, the averaged sentence, the history's number, the HTML report.

Made-up reports with known numbers: each assertion fails if the headline figure (acc or acc_norm) is
mixed up, the average or kept share is wrong, or the error-bar clause says the opposite.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from core.data.task_rows import TASKS
from core.eval.compare import (
    SavedRun,
    difference_error,
    format_accuracy,
    format_points,
    mean_task_accuracy,
    task_rows,
    task_summary,
)
from core.history.summary import summarize_report
from core.io.report_html import build_report_html


def _score(task: str, headline: str, value: float, stderr: float | None, *, other: float = 0.9, n: int = 250,
           rows_total: int = 2376, chance: float = 0.25) -> dict:
    """A stored task score whose non-headline figure is ``other`` (so reading the wrong one shows)."""
    acc, acc_norm = (value, other) if headline == "acc" else (other, value)
    return {"task": task, "title": TASKS[task].title, "n": n, "rows_total": rows_total, "acc": acc, "acc_stderr": stderr,
            "acc_norm": acc_norm, "acc_norm_stderr": stderr, "headline": headline, "chance": chance,
            "seconds": 1.0, "subset": "all" if n == rows_total else f"{n} of {rows_total} drawn at random (seed 0)",
            "stderr": stderr}


def _report(stderr: float | None = 0.04) -> dict:
    before = {"arc_easy": _score("arc_easy", "acc_norm", 0.50, stderr),
              "boolq": _score("boolq", "acc", 0.62, stderr, rows_total=3270, chance=0.5)}
    after = {"arc_easy": _score("arc_easy", "acc_norm", 0.46, stderr),
             "boolq": _score("boolq", "acc", 0.60, stderr, rows_total=3270, chance=0.5)}
    return {"recipe": "q4", "source": "bundled:smollm2-135m", "task": "causal-lm",
            "before": {"parameters": 10, "tasks": before}, "after": {"parameters": 10, "tasks": after}, "steps": []}


def test_rows_read_each_tasks_headline_figure():
    rows = {r.name: r for r in task_rows(_report())}
    assert rows["arc_easy"].title == "ARC-Easy" and rows["arc_easy"].headline == "acc_norm"
    assert (rows["arc_easy"].teacher, rows["arc_easy"].student) == (0.50, 0.46)  # acc_norm, not acc (0.9)
    assert (rows["boolq"].teacher, rows["boolq"].student) == (0.62, 0.60)  # acc, not acc_norm (0.9)
    assert rows["arc_easy"].change == pytest.approx(-0.04)
    assert rows["arc_easy"].questions == "250 of 2,376 (random subset)"
    assert rows["arc_easy"].chance == 0.25 and "science" in rows["arc_easy"].what


def test_sentence_keeps_share_and_error_bars():
    summary = task_summary(task_rows(_report(stderr=0.04)))
    assert summary.teacher == pytest.approx(0.56) and summary.student == pytest.approx(0.53)
    assert summary.kept == pytest.approx(0.53 / 0.56)
    # each average's stderr: sqrt(2 x 0.04²) / 2; the difference's: both combined = 0.04
    assert summary.error == pytest.approx(0.04)
    assert summary.within_error is True
    assert summary.sentence.startswith("The result keeps 95% of the original's accuracy on these tasks "
                                       "(average of the headline figures: 53.0% for the result vs 56.0% for the "
                                       "original).")
    assert "The difference (3.0 points) is smaller than the measurement's error bars (± 4.0 points)" \
        in summary.sentence


def test_sentence_says_when_the_drop_exceeds_the_error_bars():
    summary = task_summary(task_rows(_report(stderr=0.01)))
    assert summary.within_error is False
    assert "is larger than the measurement's error bars (± 1.0 points)" in summary.sentence
    assert "smaller" not in summary.sentence


def test_sentence_without_standard_errors_makes_no_error_claim():
    summary = task_summary(task_rows(_report(stderr=None)))
    assert summary.error is None and "error bars" not in summary.sentence
    assert "keeps 95%" in summary.sentence


def test_a_task_the_original_guesses_is_named():
    report = _report()
    report["before"]["tasks"]["arc_challenge"] = _score("arc_challenge", "acc_norm", 0.26, 0.03, rows_total=1172)
    report["after"]["tasks"]["arc_challenge"] = _score("arc_challenge", "acc_norm", 0.27, 0.03, rows_total=1172)
    rows = task_rows(report)
    assert [r.near_chance for r in rows] == [False, False, True]
    assert "close to guessing on ARC-Challenge" in task_summary(rows).sentence


def test_better_result_is_not_called_keeping():
    report = _report()
    report["after"]["tasks"]["arc_easy"]["acc_norm"] = 0.60
    sentence = task_summary(task_rows(report)).sentence
    assert sentence.startswith("The result scores 107% of the original's accuracy")  # 0.60 / 0.56


def test_a_report_without_tasks_has_no_rows_and_no_average():
    report = {"before": {"parameters": 1}, "after": {"parameters": 1}}
    assert task_rows(report) == [] and task_summary([]) is None
    assert mean_task_accuracy(report["after"]) is None
    assert "task_accuracy_after" not in summarize_report(report)


def test_history_keeps_the_mean_headline_and_which_tasks():
    summary = summarize_report(_report())
    assert summary["task_accuracy_before"] == pytest.approx(0.56)
    assert summary["task_accuracy_after"] == pytest.approx(0.53)
    assert summary["tasks"] == ["arc_easy", "boolq"]


def test_formatting_of_accuracies_and_changes():
    assert format_accuracy(0.4512, 0.0213) == "45.1% ± 2.1" and format_accuracy(None) == "—"
    assert format_points(-0.014) == "−1.4 points" and format_points(0.02) == "+2.0 points"
    assert difference_error(0.03, 0.04) == pytest.approx(0.05) and difference_error(None, 0.1) is None


def test_html_report_has_the_task_table_and_sentence():
    run = SavedRun(Path("/tmp/result"), _report(), "name: q4\n")
    html = build_report_html(run)
    section = html[html.index("<h2>Task accuracy</h2>"):html.index("<h2>Steps</h2>")]
    assert "The result keeps 95% of the original&#x27;s accuracy" in section
    assert "<td>250 of 2,376 (random subset)</td><td class='num'>50.0% ± 4.0</td><td class='num'>46.0% ± 4.0</td>" \
           "<td class='num'>−4.0 points</td><td class='num'>25%</td>" in section
    assert "62.0% ± 4.0" in section and "BoolQ" in section
    plain = SavedRun(Path("/tmp/result"), {"before": {}, "after": {}}, "name: x\n")
    assert "Task accuracy" not in build_report_html(plain)


def test_the_change_is_judged_against_the_paired_error_when_the_answers_are_known():
    """Both models answer the same 400 questions and the result loses exactly 12 of them: a real drop of
    3 points that independent error bars (±3.3) would call chance; paired over the questions it is not."""
    teacher_answers = "1" * 200 + "0" * 200
    student_answers = "0" * 12 + "1" * 188 + "0" * 200

    def side(answers):
        value = answers.count("1") / len(answers)
        stderr = math.sqrt(value * (1 - value) / (len(answers) - 1))
        return {"tasks": {"piqa": {"title": "PIQA", "headline": "acc_norm", "acc_norm": value, "stderr": stderr,
                                   "n": 400, "rows_total": 1838, "chance": 0.5, "answers": answers}}}

    report = {"before": side(teacher_answers), "after": side(student_answers)}
    row = task_rows(report)[0]
    diffs = [int(s) - int(t) for t, s in zip(teacher_answers, student_answers, strict=True)]
    assert row.change_stderr == pytest.approx(statistics.stdev(diffs) / math.sqrt(400))
    assert row.change_stderr < 0.01 < difference_error(row.teacher_stderr, row.student_stderr)
    assert row.within_error is False
    summary = task_summary([row])
    assert "larger than the measurement's error bars" in summary.sentence
    without = {side_name: {"tasks": {"piqa": {k: v for k, v in part["tasks"]["piqa"].items() if k != "answers"}}}
               for side_name, part in report.items()}
    assert "smaller than the measurement's error bars" in task_summary(task_rows(without)).sentence
