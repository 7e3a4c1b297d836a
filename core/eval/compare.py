"""Teacher versus student: the comparison table of a finished run, and where two answers diverge.

Everything here is pure (no torch, no Qt), so the app, the HTML report and the CLI share it:

* :func:`read_output_folder` reads a saved run (``report.json`` + ``recipe.yaml``);
* :func:`compare_rows` turns its report into one row per measure, teacher (the run's source
  model) against student (the saved result), with the student/teacher ratio.  Every number comes
  from the report, i.e. was measured by the run; a number the run did not measure is ``None`` and
  the row says how to get it measured, never an estimate;
* :func:`token_divergence` aligns two token sequences and marks the tokens where they differ.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import StudioError

NOT_MEASURED = "not measured"


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
        for key, label in (("accuracy", "Accuracy"), ("macro_f1", "Macro F1")):
            rows.append(CompareRow(key, label, "", _get(before, "classification", key),
                                   _get(after, "classification", key), "higher",
                                   "On the held-out part of the labelled data; higher is better.", hint))
    kl = _get(comparison, "kl_per_token")
    rows.append(CompareRow("kl_to_teacher", "KL to the teacher", "nats/token", 0.0 if kl is not None else None, kl,
                           "lower", "How far the student's next-token predictions drift from the teacher's "
                           "(KL divergence on the evaluation text); the teacher is 0 by definition.",
                           "switch on 'Measure KL to original' (and perplexity) in the evaluation settings and run again"))
    for row in rows:
        if row.missing and not row.measured:
            row.missing = f"{NOT_MEASURED} — {row.missing}"
        elif not row.measured:
            row.missing = f"{NOT_MEASURED} by this run"
        else:
            row.missing = ""
    return rows


def size_note(report: dict[str, Any]) -> str | None:
    """A plain sentence when the result is larger on disk than the original (e.g. a 4-bit GGUF source
    saved back as bfloat16), so the bigger number is explained instead of looking like a mistake."""
    before, after = report.get("before") or {}, report.get("after") or {}
    teacher, student = _get(before, "bytes_on_disk"), _get(after, "bytes_on_disk")
    if teacher is None or student is None or student <= teacher:
        return None
    return (f"The result is larger on disk than the original ({student / 1e6:,.1f} MB vs {teacher / 1e6:,.1f} MB): "
            f"the original is {before.get('on_disk_is', 'stored more compactly')}, the result is "
            f"{after.get('on_disk_is', 'saved as floating-point weights')}. Add a quantization step to the "
            "pipeline to make the file smaller.")


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
