"""A plain verdict on a compressed model's quality: "nearly unchanged", "noticeably worse" or "broken"
(or "better"), from what the run measured, with the one number that decided it.

Pure (no torch, no Qt): the Run page, the Compare page, History and the HTML report share it.

* :func:`quality_verdict` judges measured numbers: perplexity before and after, KL to the original
  (nats per token), and task accuracy per task (:class:`TaskMeasure`) when the run scored tasks;
* :func:`quality_inputs` picks those numbers out of a run report as a small JSON-safe dict (History
  keeps it with the run), :func:`inputs_verdict` judges such a dict, and :func:`report_verdict` does both;
* :func:`metrics_verdict` judges a History record's metrics, and :func:`task_measures` turns the Compare
  page's task rows into what the verdict reads.

Each measure gives a level on its own; the worst one decides ("better" only when no measure is worse),
and the reason names the measure(s) that decided it.  A measure the run did not take is left out and the
verdict says what it was based on; with nothing measured the level is "not measured".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.eval.class_compare import teacher_scores
from core.eval.compare import TaskRow, task_rows

BETTER = "better"
UNCHANGED = "nearly unchanged"
WORSE = "noticeably worse"
BROKEN = "broken"
NOT_MEASURED = "not measured"
LEVELS = (BETTER, UNCHANGED, WORSE, BROKEN, NOT_MEASURED)
_SEVERITY = {BETTER: 0, UNCHANGED: 1, WORSE: 2, BROKEN: 3}

# ---- thresholds, and why -----------------------------------------------------------------------------
# Perplexity ratio (after / before).  llama.cpp's quantization tables (perplexity tool, PR #6936, LLaMA-3-8B)
# put 8-, 6- and 5-bit files at +0.04%, +0.35% and +0.9% perplexity and a good 4-bit file (IQ4_XS) at
# +3.7%: files people use as "practically lossless".  So up to +5% reads "nearly unchanged".  "Broken"
# means the text falls apart, which takes far more than a doubling: on the bundled SmolLM2-135M, magnitude
# pruning at 30% gave ×1.53 and Wanda at 50% (8 short calibration windows) ×2.18 with KL 0.84, and both still
# wrote fluent sentences (worse ones); at 90% magnitude pruning ×255,000 and gibberish.  Four times the
# perplexity (a model as unsure as if it had to pick among four times as many words) is where we call it broken.
PPL_UNCHANGED = 1.05  # ratio ≤ this: nearly unchanged
PPL_BETTER = 0.95  # ratio < this: better (down more than 5%)
PPL_BROKEN = 4.0  # ratio > this: broken
# KL to the original, nats per token.  Same tables: 8-bit 0.001, 6-bit 0.005, 5-bit 0.011, IQ4_XS 0.043 —
# so ≤ 0.05 is what "nearly lossless" files measure.  Above 2 nats per token the result puts, on average,
# e² (7.4) times less probability on what the original expects: the answers have little left in common (the
# bundled model at 30% magnitude pruning: 0.53 and Wanda 50%: 0.84, both still fluent; at 90%: 12.6).
KL_UNCHANGED = 0.05
KL_BROKEN = 2.0
# Task accuracy: a drop counts only when it is larger than twice its standard error (about 95% sure it
# is not the luck of which questions were drawn) and at least 1 percentage point (smaller changes are
# not something anyone notices in use, even when a very large question set makes them "significant").
TASK_SIGMAS = 2.0
TASK_MIN_CHANGE = 0.01

THRESHOLDS = (
    "How the verdict is decided, from what the run measured (the worst measure decides):\n"
    f"• nearly unchanged: perplexity within {PPL_UNCHANGED - 1:.0%} of the original's, KL to the original at "
    f"most {KL_UNCHANGED}, and task accuracy not down by more than its error bars;\n"
    f"• noticeably worse: perplexity up more than {PPL_UNCHANGED - 1:.0%}, or KL above {KL_UNCHANGED}, or task "
    f"accuracy down by more than {TASK_SIGMAS:.0f} standard errors (and at least {TASK_MIN_CHANGE * 100:.0f} "
    "point);\n"
    f"• broken: perplexity more than {PPL_BROKEN:.0f} times the original's, or KL above {KL_BROKEN:.0f}, or a "
    "task answered no better than guessing where the original clearly did better;\n"
    f"• better: perplexity down more than {1 - PPL_BETTER:.0%}, or task accuracy up by more than "
    f"{TASK_SIGMAS:.0f} standard errors, with no measure worse.\n"
    "KL: how far the next-token predictions drift from the original's (0 = identical; in nats per token). "
    "Perplexity: how surprised the model is by the evaluation text (lower is better).")


@dataclass(frozen=True)
class TaskMeasure:
    """One scored task (or a classifier's labelled test set), original against result, fractions 0..1."""

    title: str
    before: float
    after: float
    change_stderr: float | None = None  # the standard error of after - before (None: unknown)
    chance: float | None = None  # what guessing scores (None: unknown)
    before_stderr: float | None = None

    @property
    def change(self) -> float:
        return self.after - self.before

    @property
    def original_beats_guessing(self) -> bool:
        """Whether the original scores clearly above guessing (more than two standard errors)."""
        return self.chance is not None and self.before > self.chance + TASK_SIGMAS * (self.before_stderr or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "before": self.before, "after": self.after,
                "change_stderr": self.change_stderr, "chance": self.chance, "before_stderr": self.before_stderr}


@dataclass(frozen=True)
class Verdict:
    """``level`` (one of :data:`LEVELS`), ``reason`` (one plain sentence naming the deciding numbers),
    ``basis`` (what it was based on, and what was not measured) and ``thresholds`` (the rules)."""

    level: str
    reason: str
    basis: str
    thresholds: str = THRESHOLDS

    @property
    def measured(self) -> bool:
        return self.level != NOT_MEASURED

    @property
    def tooltip(self) -> str:
        """The reason, what it was based on, then the thresholds: the text to hover over."""
        return f"{self.reason}\n{self.basis}\n\n{self.thresholds}"

    @property
    def headline(self) -> str:
        """'Quality: nearly unchanged — perplexity rose 3% …' (one line)."""
        return f"Quality: {self.level} — {self.reason}"


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


def _number(value: float) -> str:
    """17.3657 -> '17.37', 4444427.3 -> '4,444,427'."""
    if math.isinf(value):
        return "infinite"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"


def _times(ratio: float) -> str:
    return "infinitely many" if math.isinf(ratio) else f"{ratio:.1f}" if ratio < 100 else f"{ratio:,.0f}"


# ---- one level per measure, each with its phrase ----------------------------------------------------------
def _perplexity(before: float, after: float) -> tuple[str, str]:
    ratio = math.inf if math.isinf(after) else after / before
    figures = f"({_number(before)} → {_number(after)})"
    if ratio > PPL_BROKEN:
        return BROKEN, f"perplexity rose to {_times(ratio)} times the original's {figures}"
    change = (ratio - 1) * 100
    amount = f"{abs(change):.1f}%" if abs(change) < 10 else f"{abs(change):.0f}%"
    if abs(change) < 0.05:
        words = f"perplexity did not move {figures}"
    else:
        words = f"perplexity {'rose' if change > 0 else 'fell'} {amount} {figures}"
    if ratio > PPL_UNCHANGED:
        return WORSE, words
    if ratio < PPL_BETTER:
        return BETTER, words
    return UNCHANGED, words


def _kl(kl: float) -> tuple[str, str]:
    figure = "KL under 0.001" if kl < 0.001 else f"KL {kl:.3g}" if kl > KL_BROKEN else f"KL {kl:.2g}"
    if kl > KL_BROKEN:
        return BROKEN, f"its predictions have little left in common with the original's ({figure})"
    if kl > KL_UNCHANGED:
        return WORSE, f"its predictions drift from the original's ({figure})"
    return UNCHANGED, f"its predictions agree closely with the original's ({figure})"


def _at_guessing(tasks: list[TaskMeasure]) -> list[TaskMeasure]:
    """Tasks the result answers no better than guessing while the original clearly beat guessing."""
    return [t for t in tasks if t.chance is not None and t.after <= t.chance and t.original_beats_guessing]


def _tasks(tasks: list[TaskMeasure]) -> tuple[str | None, str]:
    """(level, phrase) from the tasks scored on both sides; level None when their change cannot be judged."""
    guessing = _at_guessing(tasks)
    if guessing:
        t = guessing[0]
        more = f" (and {len(guessing) - 1} more task{'' if len(guessing) == 2 else 's'})" if len(guessing) > 1 else ""
        return BROKEN, (f"it answers {t.title} no better than guessing ({t.after:.1%}; guessing scores "
                        f"{t.chance:.0%}, the original {t.before:.1%}){more}")
    change = sum(t.change for t in tasks) / len(tasks)
    errors = [t.change_stderr for t in tasks]
    on = tasks[0].title if len(tasks) == 1 else f"average of {len(tasks)} tasks"
    points = f"{abs(change) * 100:.1f} points"
    direction = "did not move" if abs(change) < 0.0005 else f"{'rose' if change > 0 else 'fell'} {points}"
    if any(e is None for e in errors):
        return None, f"task accuracy {direction} ({on}), but without error bars that change is not judged"
    error = math.sqrt(sum(e * e for e in errors)) / len(tasks)  # the standard error of the average change
    margin = max(TASK_SIGMAS * error, TASK_MIN_CHANGE)
    bars = f"± {error * 100:.1f}"
    if change < -margin:
        return WORSE, f"task accuracy fell {points} ({on}; error bars {bars})"
    if change > margin:
        return BETTER, f"task accuracy rose {points} ({on}; error bars {bars})"
    return UNCHANGED, f"task accuracy {direction} ({on}), within its error bars ({bars})"


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _basis(measured: list[str], missing: list[str]) -> str:
    text = f"Based on {_join(measured)}." if measured else "Nothing that shows quality was measured."
    if missing:
        text += f" Not measured: {_join(missing)}."
    return text


def quality_verdict(perplexity_before: float | None = None, perplexity_after: float | None = None,
                    kl: float | None = None, tasks: list[TaskMeasure] | tuple[TaskMeasure, ...] = ()) -> Verdict:
    """Judge the measured numbers (any may be missing): perplexity before/after, KL to the original in nats
    per token, and the tasks scored on both sides.  The worst measure decides; see :data:`THRESHOLDS`."""
    signals: list[tuple[str, str]] = []  # (level, phrase), in the order perplexity, KL, tasks
    measured, missing = [], []
    before, after = _finite(perplexity_before), _finite(perplexity_after)
    if before is not None and after is not None and math.isfinite(before) and before > 0:
        signals.append(_perplexity(before, after))
        measured.append("perplexity")
    else:
        missing.append("perplexity")
    kl_value = _finite(kl)
    if kl_value is not None:
        signals.append(_kl(kl_value))
        measured.append("KL to the original")
    else:
        missing.append("KL to the original")
    unjudged = ""
    if tasks:
        level, phrase = _tasks(list(tasks))
        measured.append(f"task accuracy ({tasks[0].title if len(tasks) == 1 else f'{len(tasks)} tasks'})")
        if level is None:
            unjudged = phrase
        else:
            signals.append((level, phrase))
    else:
        missing.append("task accuracy")
    basis = _basis(measured, missing)
    if not signals:
        reason = (f"{unjudged[0].upper()}{unjudged[1:]}." if unjudged else
                  "The run measured neither perplexity, KL to the original nor task accuracy: switch them on "
                  "in the evaluation settings to get a verdict.")
        return Verdict(NOT_MEASURED, reason, basis)
    worst = max(_SEVERITY[level] for level, _ in signals)
    if worst == _SEVERITY[UNCHANGED] and any(level == BETTER for level, _ in signals):
        worst = _SEVERITY[BETTER]
    overall = next(level for level, rank in _SEVERITY.items() if rank == worst)
    deciding = [phrase for level, phrase in signals if level == overall]
    others = [phrase for level, phrase in signals if level != overall] + ([unjudged] if unjudged else [])
    text = _join(deciding)
    if others:
        text += ("; " if overall in (BROKEN, WORSE) else ", and ") + _join(others)
    return Verdict(overall, f"{text[0].upper()}{text[1:]}.", basis)


# ---- from a run report or a History record ----------------------------------------------------------------
def _classification_measure(report: dict[str, Any]) -> TaskMeasure | None:
    """A classifier's labelled test accuracy as a task: error bars from the binomial standard error
    sqrt(p(1-p)/n) of each side (independent, as the per-example answers are not kept), guessing = always
    answering the most common label (or 1 / number of labels if that is higher).  The teacher side is the
    fine-tuned teacher a distillation step learnt from, where there is one (:func:`teacher_scores`)."""
    teacher, _whose = teacher_scores(report)
    after = (report.get("after") or {}).get("classification") or {}
    b, a = _finite(teacher.get("accuracy")), _finite(after.get("accuracy"))
    n = after.get("examples")
    if b is None or a is None or not isinstance(n, int) or n < 1:
        return None
    b_err, a_err = math.sqrt(b * (1 - b) / n), math.sqrt(a * (1 - a) / n)
    support = [c.get("support", 0) for c in (after.get("per_class") or {}).values() if isinstance(c, dict)]
    chance = max([1 / len(support), max(support) / n]) if support and sum(support) == n else None
    return TaskMeasure("the labelled test set", b, a, math.hypot(b_err, a_err), chance, b_err)


def task_measures(rows: list[TaskRow]) -> list[TaskMeasure]:
    """The tasks of :func:`core.eval.compare.task_rows` scored on both sides, as the verdict reads them."""
    return [TaskMeasure(r.title, r.teacher, r.student, r.change_stderr, r.chance, r.teacher_stderr)
            for r in rows if r.measured]


def quality_inputs(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers a verdict needs from a run report, as a JSON-safe dict (kept in History with the run)."""
    before = ((report.get("before") or {}).get("perplexity") or {}).get("perplexity")
    after = ((report.get("after") or {}).get("perplexity") or {}).get("perplexity")
    kl = (report.get("comparison") or {}).get("kl_per_token")
    tasks = task_measures(task_rows(report))
    labelled = _classification_measure(report)
    if labelled is not None:
        tasks.append(labelled)
    return {"perplexity_before": _finite(before), "perplexity_after": _finite(after), "kl": _finite(kl),
            "tasks": [t.to_dict() for t in tasks]}


def _task_from_dict(item: Any) -> TaskMeasure | None:
    if not isinstance(item, dict):
        return None
    before, after = _finite(item.get("before")), _finite(item.get("after"))
    if before is None or after is None:
        return None
    return TaskMeasure(str(item.get("title", "a task")), before, after, _finite(item.get("change_stderr")),
                       _finite(item.get("chance")), _finite(item.get("before_stderr")))


def inputs_verdict(inputs: dict[str, Any]) -> Verdict:
    """The verdict of a :func:`quality_inputs` dict."""
    tasks = [t for t in map(_task_from_dict, inputs.get("tasks") or []) if t is not None]
    return quality_verdict(inputs.get("perplexity_before"), inputs.get("perplexity_after"), inputs.get("kl"),
                           tasks)


def report_verdict(report: dict[str, Any] | None) -> Verdict:
    """The verdict of a run report (``report.json``)."""
    return inputs_verdict(quality_inputs(report or {}))


INPUTS_KEY = "quality_inputs"  # where History's metrics keep :func:`quality_inputs`


def metrics_verdict(metrics: dict[str, Any]) -> Verdict:
    """The verdict of a History record's metrics: from the kept :func:`quality_inputs` when the run stored
    them, else (runs recorded before verdicts) from its perplexity and KL alone."""
    inputs = metrics.get(INPUTS_KEY)
    if isinstance(inputs, dict):
        return inputs_verdict(inputs)
    before, after = _finite(metrics.get("task_accuracy_before")), _finite(metrics.get("task_accuracy_after"))
    tasks = [TaskMeasure("the tasks' average", before, after)] if before is not None and after is not None else []
    return quality_verdict(metrics.get("perplexity_before"), metrics.get("perplexity_after"),
                           metrics.get("kl_to_teacher"), tasks)
