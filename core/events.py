"""Typed events a job yields while it runs.

A job (loading a model, running a recipe) is a generator of these plain dataclasses.  The CLI
turns them into progress bars and log lines; the GUI's worker forwards them to the window via
signals; tests just collect them.  Every ``yield`` is a cancel point: a consumer cancels a job
by closing the generator.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    """How far a stage has come.  ``total`` may be 0 when unknown; ``eta_s`` is None then."""

    stage: str
    done: float
    total: float
    eta_s: float | None = None
    step_index: int | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


@dataclass(frozen=True)
class Metric:
    """A measured number, e.g. ``perplexity`` before a run or ``loss/total`` at a training step."""

    name: str
    value: float
    step: int | None = None
    unit: str = ""
    step_index: int | None = None


@dataclass(frozen=True)
class LayerStat:
    """One per-layer figure, e.g. the sparsity of ``model.layers.3.mlp.up_proj``."""

    layer: str
    name: str
    value: float
    step_index: int | None = None


@dataclass(frozen=True)
class Log:
    """A line for the log pane.  ``level`` is ``info``, ``warning`` or ``error``."""

    message: str
    level: str = "info"


@dataclass(frozen=True)
class StageStarted:
    """The run entered its ``position``-th of ``total`` stages (1-based): loading, measuring, a step, saving.

    ``stage`` is a stable key (``load``, ``measure_before``, ``step``, ``measure_after``, ``save``);
    ``title`` is what a person reads ("Step 2 of 3: GPTQ").  For technique steps ``step_index`` is the
    step's index in the recipe, ``technique`` its registered name and ``step_number``/``total_steps``
    count only the enabled steps.  Consumers that do not know this event may ignore it.
    """

    stage: str
    title: str
    position: int
    total: int
    step_index: int | None = None
    technique: str | None = None
    step_number: int | None = None
    total_steps: int | None = None


@dataclass(frozen=True)
class StepDone:
    """A recipe step finished; ``report`` is its StepReport as a dict."""

    step_index: int
    technique: str
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunDone:
    """The whole run finished and its output folder exists."""

    output_dir: str
    report: dict[str, Any] = field(default_factory=dict)


Event = Progress | Metric | LayerStat | Log | StageStarted | StepDone | RunDone


def event_to_dict(event: Event) -> dict[str, Any]:
    """Serialise an event with its type name (for JSON logs and the run history)."""
    return {"type": type(event).__name__, **asdict(event)}


class ProgressMeter:
    """Makes Progress events with an ETA, and says when one is worth emitting.

    ``update`` returns an event only when progress moved by at least ``min_step`` of the total
    (0.1% by default) or the stage finished, so a tight loop does not flood the consumer.
    """

    def __init__(self, stage: str, total: float, step_index: int | None = None, min_step: float = 0.001):
        self.stage = stage
        self.total = total
        self.step_index = step_index
        self.min_step = min_step
        self._start = time.perf_counter()
        self._last_emitted = -1.0

    def update(self, done: float, force: bool = False) -> Progress | None:
        fraction = done / self.total if self.total else 0.0
        finished = self.total and done >= self.total
        if not (force or finished or fraction - self._last_emitted >= self.min_step):
            return None
        self._last_emitted = fraction
        elapsed = time.perf_counter() - self._start
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else None
        return Progress(self.stage, done, self.total, eta, self.step_index)


def drain(job):
    """Run a job generator to the end, ignoring its events; return what it returns."""
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value
