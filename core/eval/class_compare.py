"""Per-class scores of a classifier's teacher and student, side by side, from a run report.

The student is the saved result: ``report["after"]["classification"]`` (measured by the runner on
the labelled data's test split).  The teacher is the model the student learnt from when the run has a
distillation step that scored it (``teacher_test_per_class`` in that step's metrics, on the same test
split), otherwise the run's original model (``report["before"]["classification"]``).  A class "got
worse" when its F1 fell by more than :data:`WORSE_F1` (0.05).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WORSE_F1 = 0.05


@dataclass
class ClassRow:
    """One class: its test examples and each side's precision / recall / F1 (None where not measured)."""

    name: str
    support: int
    teacher: dict[str, float] | None
    student: dict[str, float] | None

    @property
    def f1_change(self) -> float | None:
        if self.teacher is None or self.student is None:
            return None
        return self.student["f1"] - self.teacher["f1"]


@dataclass
class ClassComparison:
    teacher_title: str  # what the teacher column is: "Teacher" (a distillation step's) or "Original"
    teacher_about: str
    names: list[str]
    rows: list[ClassRow]
    teacher_confusion: list[list[int]] | None
    student_confusion: list[list[int]] | None

    def worse(self) -> list[ClassRow]:
        """Classes whose F1 fell by more than WORSE_F1, the largest fall first."""
        rows = [r for r in self.rows if r.f1_change is not None and r.f1_change < -WORSE_F1]
        return sorted(rows, key=lambda r: r.f1_change)

    def sentence(self) -> str:
        """A plain sentence on the classes that got worse (or that none did)."""
        if all(r.f1_change is None for r in self.rows):
            return "Only one side was measured, so no class can be compared."
        worse = self.worse()
        if not worse:
            return (f"No class got worse: every class's F1 is within {WORSE_F1:.2f} of the "
                    f"{self.teacher_title.lower()}'s, or better.")
        items = ", ".join(f"{r.name} (F1 {r.teacher['f1']:.2f} → {r.student['f1']:.2f})" for r in worse)
        verb = "class got" if len(worse) == 1 else "classes got"
        return f"{len(worse)} {verb} worse (F1 down by more than {WORSE_F1:.2f}): {items}."


def _teacher(report: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None, list | None]:
    for step in reversed(report.get("steps") or []):
        metrics = step.get("metrics") if isinstance(step, dict) else None
        if isinstance(metrics, dict) and isinstance(metrics.get("teacher_test_per_class"), dict):
            return ("Teacher", "the model the student learnt from, scored by the distillation step on the same "
                               "test split", metrics["teacher_test_per_class"],
                    metrics.get("teacher_test_confusion_matrix"))
    before = (report.get("before") or {}).get("classification") or {}
    return ("Original", "the run's original model, on the same test split", before.get("per_class"),
            before.get("confusion_matrix"))


def teacher_scores(report: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The teacher side's headline classification scores (accuracy, macro_f1, …) and a sentence on whose they are.

    With a distillation step that scored its teacher, the teacher is that fine-tuned model (the run's original
    only had a head of its own, not trained on these labels); otherwise the run's original model."""
    for step in reversed(report.get("steps") or []):
        metrics = step.get("metrics") if isinstance(step, dict) else None
        if isinstance(metrics, dict) and isinstance(metrics.get("teacher_test_accuracy"), (int, float)):
            scores = {key.removeprefix("teacher_test_"): value for key, value in metrics.items()
                      if key.startswith("teacher_test_")}
            return scores, (" The teacher's accuracy is that of the fine-tuned model the student learnt from "
                            "(scored by the distillation step on the same test split), not of the original "
                            "before it was trained on these labels.")
    return dict((report.get("before") or {}).get("classification") or {}), ""


def class_comparison(report: dict[str, Any] | None) -> ClassComparison | None:
    """The per-class comparison of a run report, or None when the result has no per-class scores."""
    after = ((report or {}).get("after") or {}).get("classification") or {}
    student = after.get("per_class")
    if not isinstance(student, dict) or not student:
        return None
    title, about, teacher, teacher_confusion = _teacher(report)
    teacher = teacher if isinstance(teacher, dict) else {}
    names = list(student)
    rows = [ClassRow(name, int(student[name].get("support", 0)), teacher.get(name), student[name]) for name in names]
    return ClassComparison(title, about, names, rows,
                           teacher_confusion if teacher and list(teacher) == names else None,
                           after.get("confusion_matrix"))
