"""Teacher versus student: the comparison table of a finished run, and where two answers diverge.

Everything here is pure (no torch, no Qt), so the app, the HTML report and the CLI share it:

* :func:`read_output_folder` reads a saved run (``report.json`` + ``recipe.yaml``);
* :func:`compare_rows` turns its report into one row per measure, teacher (the run's source
  model) against student (the saved result), with the student/teacher ratio.  Every number comes
  from the report, i.e. was measured by the run; a number the run did not measure is ``None`` and
  the row says how to get it measured, never an estimate;
* :func:`task_rows` and :func:`task_summary` do the same for zero-shot task accuracy (one row per
  task, each figure with its standard error) and put the averages into one plain sentence;
* :func:`token_divergence` aligns two token sequences and marks the tokens where they differ, and
  :func:`divergence_sentence` says in one plain sentence where two answers part.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data.task_rows import TASKS
from core.errors import StudioError
from core.eval.class_compare import teacher_scores
from core.eval.size_baseline import OriginalSize, is_smaller, original_size, size_change_words

NOT_MEASURED = "not measured"
# What 'KL to the teacher' measures, in plain words (its tooltip wherever it is shown).
KL_EXPLANATION = ("How far the result's next-token predictions drift from the original's, averaged over the "
                  "evaluation text (KL divergence). 0 means exactly the same predictions; the larger the number, the "
                  "more they differ. The unit, nats per token, counts the extra surprise with natural logarithms, "
                  "per token (word or piece of a word) of the text.")


class OutputFolderError(StudioError):
    """A folder that is not a saved run of this app."""


@dataclass
class SavedRun:
    """A run's output folder, as read back from disk."""

    folder: Path
    report: dict[str, Any]
    recipe_yaml: str

    @property
    def teacher_source(self) -> str:
        return str(self.report.get("source", ""))

    @property
    def task(self) -> str:
        return str(self.report.get("task", "causal-lm"))


def read_output_folder(folder: str | Path) -> SavedRun:
    """Read ``report.json`` and ``recipe.yaml`` of a run's output folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise OutputFolderError(f"{folder} is not a folder: choose the output folder of a finished run")
    report_file, recipe_file = folder / "report.json", folder / "recipe.yaml"
    if not report_file.is_file() or not recipe_file.is_file():
        raise OutputFolderError(f"{folder} has no report.json and recipe.yaml, so it is not the output of a run "
                                "of this app: choose the folder a run saved its result to")
    try:
        report = json.loads(report_file.read_text(encoding="utf-8"))
        recipe_yaml = recipe_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OutputFolderError(f"{report_file} cannot be read ({exc}); the folder is damaged") from exc
    if not isinstance(report, dict) or "before" not in report or "after" not in report:
        raise OutputFolderError(f"{report_file} has no before/after measurements; the folder is damaged")
    return SavedRun(folder, report, recipe_yaml)


@dataclass
class CompareRow:
    """One measure, teacher against student.  ``None`` values were not measured; ``missing`` says why."""

    key: str
    label: str
    unit: str
    teacher: float | None
    student: float | None
    better: str  # "lower", "higher" or "" (neither: a description, not a score)
    explanation: str
    missing: str = ""

    @property
    def measured(self) -> bool:
        return self.teacher is not None and self.student is not None

    @property
    def ratio(self) -> float | None:
        """student / teacher, or None when either is missing or the teacher's value is 0."""
        if not self.measured or not self.teacher:
            return None
        return self.student / self.teacher

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "unit": self.unit, "teacher": self.teacher,
                "student": self.student, "ratio": self.ratio, "better": self.better,
                "explanation": self.explanation, "missing": self.missing}


def _get(part: dict[str, Any], *path: str) -> float | None:
    value: Any = part
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mb(value: float | None) -> float | None:
    return None if value is None else value / 1e6


def _perplexity_method(measured: dict[str, Any]) -> str:
    """How the report's perplexity was counted, as a sentence to add to its explanation ('' if not said)."""
    method = (measured.get("perplexity") or {}).get("method") if isinstance(measured.get("perplexity"), dict) else ""
    return f" Counted in {method}." if method else ""


def compare_rows(report: dict[str, Any]) -> list[CompareRow]:
    """The comparison table of a run report: teacher = ``before``, student = ``after``."""
    before, after = report.get("before") or {}, report.get("after") or {}
    comparison = report.get("comparison") or {}
    task = report.get("task", "causal-lm")
    rows = [
        CompareRow("parameters", "Parameters", "", _get(before, "parameters"), _get(after, "parameters"), "lower",
                   "Every weight of the model, zeros included; shared weights counted once."),
        CompareRow("nonzero_parameters", "Non-zero parameters", "", _get(before, "nonzero_parameters"),
                   _get(after, "nonzero_parameters"), "lower",
                   "Weights that are not exactly zero. Pruning lowers this; a dense file keeps its size."),
        CompareRow("disk_mb", "Size on disk", "MB", _mb(_get(before, "bytes_on_disk")),
                   _mb(_get(after, "bytes_on_disk")), "lower",
                   f"Weight files (1 MB = 1,000,000 bytes). Teacher: {before.get('on_disk_is', 'the source weights')}."
                   f" Student: {after.get('on_disk_is', 'the saved weight files')}."),
    ]
    sizes = original_size(before)
    if sizes.compact_gguf:  # a run saves safetensors: against a 4-bit GGUF file alone it reads "2.7× larger"
        rows.append(CompareRow("disk_16bit_mb", "Size as a 16-bit model", "MB", _mb(sizes.as_16bit),
                               _mb(_get(after, "bytes_on_disk")), "lower",
                               f"The original is stored as {sizes.stored_format}; here its weights are counted as "
                               "a 16-bit transformers model (the format results are saved in), against the "
                               "result's weight files: the like-for-like comparison."))
    rows += [
        CompareRow("memory_mb", "Size in memory", "MB", _mb(_get(before, "bytes_in_memory")),
                   _mb(_get(after, "bytes_in_memory")), "lower",
                   "Bytes the weights take once loaded, in the number format they are kept in."),
    ]
    if task == "causal-lm":
        speed_hint = "switch on 'Measure speed' in the evaluation settings (evaluation.speed in the recipe) and run again"
        rows.append(CompareRow("decode_tokens_per_s", "Decode speed", "tokens/s",
                               _get(before, "speed", "decode_tokens_per_s"), _get(after, "speed", "decode_tokens_per_s"),
                               "higher", "New tokens per second when generating with the KV cache (median of the "
                               "timed runs, same prompt for both, on the run's device).", speed_hint))
        rows.append(CompareRow("perplexity", "Perplexity", "", _get(before, "perplexity", "perplexity"),
                               _get(after, "perplexity", "perplexity"), "lower",
                               "How surprised the model is by the held-out evaluation text; lower is better."
                               + _perplexity_method(after),
                               "switch on 'Measure perplexity' in the evaluation settings and run again"))
    else:
        hint = "choose a labelled dataset on the Pipeline page and run again"
        teacher, whose = teacher_scores(report)
        for key, label in (("accuracy", "Accuracy"), ("macro_f1", "Macro F1")):
            rows.append(CompareRow(key, label, "", _get(teacher, key), _get(after, "classification", key), "higher",
                                   "On the held-out part of the labelled data; higher is better." + whose, hint))
    kl = _get(comparison, "kl_per_token")
    if task != "causal-lm" and kl is None:  # a classifier: closeness to the original is its accuracy, above
        return _with_missing_notes(rows)
    rows.append(CompareRow("kl_to_teacher", "KL to the teacher", "nats/token", 0.0 if kl is not None else None, kl,
                           "lower", KL_EXPLANATION + " The teacher is 0 by definition.",
                           "switch on 'Measure KL to original' (and perplexity) in the evaluation settings and run again"))
    return _with_missing_notes(rows)


def _with_missing_notes(rows: list[CompareRow]) -> list[CompareRow]:
    """Say in each row what was not measured (and how to measure it), or nothing."""
    for row in rows:
        if row.missing and not row.measured:
            row.missing = f"{NOT_MEASURED} — {row.missing}"
        elif not row.measured:
            row.missing = f"{NOT_MEASURED} by this run"
        else:
            row.missing = ""
    return rows


def size_note(report: dict[str, Any]) -> str | None:
    """One plain sentence about the result's size against the original's, or None when there is nothing to explain.

    From a GGUF source stored in fewer than 16 bits (e.g. the bundled 4-bit SmolLM2) the sentence gives both of
    the original's sizes, the file and the model as 16-bit weights, and compares the result (saved as
    floating-point safetensors) with the 16-bit size, the same format (``core.eval.size_baseline``); when the
    result is larger than the original's file it points at a GGUF export.  From any other source it explains a
    result larger on disk than the original; a quantization step is advised only when the pipeline has none, a
    pipeline that already quantizes is pointed at a GGUF export instead.
    """
    before, after = report.get("before") or {}, report.get("after") or {}
    teacher, student = _get(before, "bytes_on_disk"), _get(after, "bytes_on_disk")
    original = original_size(before)
    if original.compact_gguf and student is not None:
        return _gguf_size_sentence(report, original, student)
    if teacher is None or student is None or student <= teacher:
        return None
    text = (f"The result is larger on disk than the original ({student / 1e6:,.1f} MB vs {teacher / 1e6:,.1f} MB): "
            f"the original is {before.get('on_disk_is', 'stored more compactly')}, the result is "
            f"{after.get('on_disk_is', 'saved as floating-point weights')}.")
    if _quantizes(report):
        return text + (" The quantized layers are stored compactly, the rest as floating point: export the result "
                       "as GGUF (Export page) for a file in the original's compact format.")
    return text + " Add a quantization step to the pipeline to make the file smaller."


def _gguf_size_sentence(report: dict[str, Any], original: OriginalSize, student: float) -> str:
    """'The original file is 4-bit GGUF Q4_1 (98.4 MB); as a 16-bit model it is 269.0 MB. Your result (bfloat16,
    269.1 MB) is compared with the 16-bit size: same size. To get a small file again, export it as GGUF Q4_0 on
    the Export page.'"""
    stored, as_16bit = original.stored or 0.0, original.as_16bit or 0.0
    dtype = str((report.get("output") or {}).get("dtype") or "floating point")
    what = f"{dtype} with quantized layers" if _quantizes(report) else dtype
    text = (f"The original file is {original.stored_format} ({stored / 1e6:,.1f} MB); as a 16-bit model it is "
            f"{as_16bit / 1e6:,.1f} MB. Your result ({what}, {student / 1e6:,.1f} MB) is compared with the 16-bit "
            f"size: {size_change_words(student, as_16bit)}.")
    if is_smaller(student, stored):
        return text + " It is smaller than the original file too."
    kind = "Q4_0" if (original.stored_bits or 4) <= 4 else "Q8_0"
    return text + f" To get a small file again, export it as GGUF {kind} on the Export page."


def _quantizes(report: dict[str, Any]) -> bool:
    """Whether an enabled step of the run quantized weights (its family, or by name in reports written before
    steps recorded their family)."""
    for step in report.get("steps") or []:
        if not isinstance(step, dict):
            continue
        family, name = step.get("family"), str(step.get("technique", ""))
        if family == "quantization" or (family is None and ("quantiz" in name or name == "dynamic_int8")):
            return True
    return False


def format_value(value: float | None, unit: str = "") -> str:
    """A measured number as people read it: counts with separators, others with 4 significant digits."""
    if value is None:
        return "—"
    if abs(value) >= 1e4 and float(value).is_integer():
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:,.1f}"
    else:
        text = f"{value:.4g}"
    return f"{text} {unit}".strip()


def format_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.3g}×"


# ------------------------------------------------------------------------------- task accuracy
HEADLINE_WORDS = {"acc": "accuracy", "acc_norm": "accuracy with answers scored per character (acc_norm)"}


@dataclass
class TaskRow:
    """One zero-shot task, original (teacher) against result (student): the headline figure as a
    fraction 0..1 with its standard error (``None`` where the run did not score that side)."""

    name: str
    title: str
    what: str  # one plain sentence: what the task asks ('' for a person's own file)
    headline: str  # "acc" or "acc_norm"
    chance: float | None  # accuracy of guessing
    n: int  # questions scored
    rows_total: int  # questions in the task
    subset: str  # "all", or how the random subset was drawn
    teacher: float | None
    teacher_stderr: float | None
    student: float | None
    student_stderr: float | None
    change_stderr: float | None = None  # the change's standard error (paired where the answers are known)

    @property
    def measured(self) -> bool:
        return self.teacher is not None and self.student is not None

    @property
    def change(self) -> float | None:
        """student - teacher, in fractions (0.01 = one percentage point)."""
        return self.student - self.teacher if self.measured else None

    @property
    def is_subset(self) -> bool:
        return self.n < self.rows_total

    @property
    def count(self) -> str:
        """'250 of 2,376' or 'all 2,376'."""
        return f"{self.n:,} of {self.rows_total:,}" if self.is_subset else f"all {self.rows_total:,}"

    @property
    def questions(self) -> str:
        """'250 of 2,376 (random subset)' or 'all 2,376'."""
        return f"{self.count} (random subset)" if self.is_subset else self.count

    @property
    def within_error(self) -> bool | None:
        """Whether the change is smaller than its error bar (``change_stderr``)."""
        return _within(self.change, self.change_stderr)

    @property
    def near_chance(self) -> bool:
        """Whether the original scores within two standard errors of guessing: then the task says
        little about what compression did."""
        if self.teacher is None or self.chance is None:
            return False
        return self.teacher <= self.chance + 2 * (self.teacher_stderr or 0.0)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _headline(score: dict[str, Any]) -> tuple[float | None, float | None]:
    """(headline value, its standard error) of one stored task score."""
    headline = score.get("headline", "acc")
    stderr = score.get("stderr", score.get(f"{headline}_stderr"))
    return _number(score.get(headline)), _number(stderr)


def _task_scores(part: Any) -> dict[str, dict[str, Any]]:
    tasks = part.get("tasks") if isinstance(part, dict) else None
    return {k: v for k, v in tasks.items() if isinstance(v, dict)} if isinstance(tasks, dict) else {}


def task_rows(report: dict[str, Any]) -> list[TaskRow]:
    """One row per task a run scored (``report["before"|"after"]["tasks"]``), in the run's order."""
    before, after = _task_scores(report.get("before")), _task_scores(report.get("after"))
    rows = []
    for name in dict.fromkeys([*before, *after]):
        teacher, student = before.get(name, {}), after.get(name, {})
        either = {**student, **teacher}
        info = TASKS.get(name)
        t_value, t_err = _headline(teacher) if teacher else (None, None)
        s_value, s_err = _headline(student) if student else (None, None)
        rows_total = either.get("rows_total")
        n = either.get("n")
        paired = paired_difference_error(teacher.get("answers"), student.get("answers"))
        rows.append(TaskRow(
            name, str(either.get("title") or (info.title if info else Path(name).name)), info.what if info else "",
            str(either.get("headline", "acc")), _number(either.get("chance")),
            int(n) if isinstance(n, int) else 0, int(rows_total) if isinstance(rows_total, int) else 0,
            str(either.get("subset", "")), t_value, t_err, s_value, s_err,
            paired if paired is not None else difference_error(t_err, s_err)))
    return rows


def paired_difference_error(teacher_answers: Any, student_answers: Any) -> float | None:
    """Standard error of the change in accuracy when both models answered the same questions.

    ``*_answers`` are strings of '1' (right) and '0' (wrong), one character per question in the same
    order (a TaskScore's ``answers``).  The per-question differences d = student - teacher are in
    {-1, 0, 1}; the error is their sample standard deviation / sqrt(n).  Pairing removes what the two
    runs share (the questions' difficulty), so it is usually much smaller than treating the two
    accuracies as independent.  None when the answers are missing or not comparable.
    """
    if not (isinstance(teacher_answers, str) and isinstance(student_answers, str)):
        return None
    if len(teacher_answers) != len(student_answers) or len(teacher_answers) < 2:
        return None
    diffs = [int(s) - int(t) for t, s in zip(teacher_answers, student_answers, strict=True)]
    mean = sum(diffs) / len(diffs)
    variance = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return math.sqrt(variance / len(diffs))


def difference_error(teacher_stderr: float | None, student_stderr: float | None) -> float | None:
    """The error bar of a difference: sqrt(teacher's stderr² + student's stderr²), the standard error
    of a difference of two independent measurements (None when either is unknown)."""
    if teacher_stderr is None or student_stderr is None:
        return None
    return math.hypot(teacher_stderr, student_stderr)


def _within(change: float | None, error: float | None) -> bool | None:
    if change is None or error is None:
        return None
    return abs(change) < error


@dataclass
class TaskSummary:
    """The average headline accuracy of the tasks scored on both sides, and what it means."""

    tasks: list[str]  # titles of the tasks averaged
    teacher: float
    student: float
    teacher_stderr: float | None
    student_stderr: float | None
    sentence: str

    @property
    def kept(self) -> float | None:
        """student / teacher: the share of the original's accuracy the result keeps (None if the original is 0)."""
        return self.student / self.teacher if self.teacher else None

    @property
    def change(self) -> float:
        return self.student - self.teacher

    change_stderrs: list[float | None] = field(default_factory=list)

    @property
    def error(self) -> float | None:
        """The standard error of the average change: sqrt(sum of the tasks' change errors²) / count."""
        return _mean_stderr(self.change_stderrs)

    @property
    def within_error(self) -> bool | None:
        return _within(self.change, self.error)


def _mean_stderr(stderrs: list[float | None]) -> float | None:
    """Standard error of the mean of independent figures: sqrt(sum of stderr²) / count."""
    if not stderrs or any(e is None for e in stderrs):
        return None
    return math.sqrt(sum(e * e for e in stderrs)) / len(stderrs)


def task_summary(rows: list[TaskRow]) -> TaskSummary | None:
    """Average the headline figures of the tasks measured on both sides and say it in one sentence.

    The sentence gives the share of the original's average the result keeps, both averages, and
    whether their difference is smaller than its error bar (the standard error of the average change:
    each task's change error, paired over the same questions where the report has the answers
    (:func:`paired_difference_error`) and :func:`difference_error` otherwise, combined as
    sqrt(sum of squares) / number of tasks).  Tasks on which the original itself scores close to guessing
    are named, since they say little about what compression did.  None when no task was scored on
    both sides.
    """
    both = [r for r in rows if r.measured]
    if not both:
        return None
    teacher = sum(r.teacher for r in both) / len(both)
    student = sum(r.student for r in both) / len(both)
    teacher_err = _mean_stderr([r.teacher_stderr for r in both])
    student_err = _mean_stderr([r.student_stderr for r in both])
    summary = TaskSummary([r.title for r in both], teacher, student, teacher_err, student_err, "",
                          [r.change_stderr for r in both])
    summary.sentence = _task_sentence(summary, both)
    return summary


def _task_sentence(summary: TaskSummary, rows: list[TaskRow]) -> str:
    on = "this task" if len(rows) == 1 else "these tasks"
    figures = "the headline figure" if len(rows) == 1 else "average of the headline figures"
    both = f"{figures}: {summary.student:.1%} for the result vs {summary.teacher:.1%} for the original"
    kept = summary.kept
    if kept is None:
        text = f"The original scores 0% on {on}; the result scores {summary.student:.1%}."
    elif kept <= 1:
        text = f"The result keeps {kept:.0%} of the original's accuracy on {on} ({both})."
    else:
        text = f"The result scores {kept:.0%} of the original's accuracy on {on} ({both})."
    error = summary.error
    if error is not None:
        points = f"{abs(summary.change) * 100:.1f} points"
        if summary.within_error:
            text += (f" The difference ({points}) is smaller than the measurement's error bars "
                     f"(± {error * 100:.1f} points), so it may be chance.")
        else:
            text += (f" The difference ({points}) is larger than the measurement's error bars "
                     f"(± {error * 100:.1f} points).")
    guessing = [r.title for r in rows if r.near_chance]
    if guessing:
        text += (f" The original itself scores close to guessing on {', '.join(guessing)}, so "
                 f"{'that task says' if len(guessing) == 1 else 'those tasks say'} little about the compression.")
    return text


def subset_note(rows: list[TaskRow]) -> str:
    """A sentence naming the tasks scored on a random subset of their questions ('' when none was)."""
    subset = [r.title for r in rows if r.is_subset]
    if not subset:
        return ""
    which = "Every task was" if len(subset) == len(rows) else f"{', '.join(subset)} {'was' if len(subset) == 1 else 'were'}"
    return (f"{which} scored on a random subset of its questions (the same subset every run): quicker, with wider "
            "error bars. 'Questions per task: all' on the Pipeline page scores every question.")


def mean_task_accuracy(part: dict[str, Any]) -> float | None:
    """The average headline accuracy (fraction 0..1) of the tasks in one side of a report
    (``report["before"]`` or ``report["after"]``); None when it scored no task."""
    values = [_headline(score)[0] for score in _task_scores(part).values()]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def format_accuracy(value: float | None, stderr: float | None = None) -> str:
    """0.4512, 0.0213 -> '45.1% ± 2.1'  (the error in percentage points; '—' when not measured)."""
    if value is None:
        return "—"
    return f"{value:.1%}" + (f" ± {stderr * 100:.1f}" if stderr is not None else "")


def format_points(change: float | None) -> str:
    """-0.014 -> '−1.4 points' (a difference of two accuracies, in percentage points)."""
    if change is None:
        return "—"
    return f"{change * 100:+.1f} points".replace("-", "−")


# ------------------------------------------------------------------------------- token divergence
@dataclass
class Divergence:
    """Two token sequences aligned: which tokens of each side match the other side."""

    teacher_same: list[bool]
    student_same: list[bool]
    first_difference: int | None  # index of the first differing token (in both), None if identical
    matching: int  # tokens in matched blocks
    blocks: list[tuple[int, int, int]] = field(default_factory=list)  # (teacher start, student start, length)

    @property
    def identical(self) -> bool:
        return self.first_difference is None


def token_divergence(teacher: Sequence[Any], student: Sequence[Any]) -> Divergence:
    """Align two token sequences (ids or strings) and mark the tokens that differ.

    Greedy answers agree up to a first differing token and often drift apart from there; after it,
    tokens that line up again (longest matching blocks, :class:`difflib.SequenceMatcher` without
    its junk heuristic) still count as the same.  ``first_difference`` is the length of the common
    prefix, unless both sequences are identical.
    """
    teacher, student = list(teacher), list(student)
    matcher = difflib.SequenceMatcher(None, teacher, student, autojunk=False)
    teacher_same, student_same = [False] * len(teacher), [False] * len(student)
    blocks = [(b.a, b.b, b.size) for b in matcher.get_matching_blocks() if b.size]
    for a, b, size in blocks:
        teacher_same[a:a + size] = [True] * size
        student_same[b:b + size] = [True] * size
    prefix = 0
    while prefix < min(len(teacher), len(student)) and teacher[prefix] == student[prefix]:
        prefix += 1
    first = None if teacher == student else prefix
    return Divergence(teacher_same, student_same, first, sum(size for _, _, size in blocks), blocks)


def _tokens(count: int) -> str:
    return f"{count} token{'' if count == 1 else 's'}"


def divergence_sentence(divergence: Divergence) -> str:
    """Where two greedy answers part, in one plain sentence with correct plurals, e.g. 'The answers agree on
    the first 3 tokens, then part; 5 tokens line up in all. Highlighted: tokens that differ (…)'."""
    teacher, student = len(divergence.teacher_same), len(divergence.student_same)
    first = divergence.first_difference
    if first is None:
        return "Both models gave exactly the same answer."
    if first == min(teacher, student):  # one answer is the start of the other
        longer, shorter = ("student", "teacher") if student > teacher else ("teacher", "student")
        if first == 0:
            return f"The {shorter} gave an empty answer; the {longer}'s has {_tokens(max(teacher, student))}."
        return (f"The {longer}'s answer starts with the {shorter}'s whole answer ({_tokens(first)}), then goes on "
                f"for {abs(student - teacher)} more token{'' if abs(student - teacher) == 1 else 's'}.")
    matching = divergence.matching
    lines_up = "no token lines up" if matching == 0 else f"{_tokens(matching)} line{'s' if matching == 1 else ''} up"
    if first == 0:
        text = "The answers differ from the first token on; " + lines_up + (" later" if matching else "")
    else:
        agreed = "token" if first == 1 else f"{first} tokens"
        text = f"The answers agree on the first {agreed}, then part; " + lines_up + (" in all" if matching else "")
    return text + ". Highlighted: tokens that differ (a token is a word or a piece of a word)."
