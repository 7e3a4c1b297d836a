"""Time left, estimated from the rate progress is being made, and one model of a whole run's progress.

Pure functions and small state keepers, no clock of their own: callers pass the time, so tests
feed made-up timelines.  An estimate needs signal: until progress moved by ``min_progress`` over
at least ``min_seconds`` there is none (the GUI says "estimating…").  The rate is measured over a
recent window so that a slow start (loading, a first slow layer) does not skew it forever.

A run's overall bar and time left come from :class:`RunEta`: its phases (loading, measuring the
original, each step, measuring the result, saving) weighted by their planned seconds, corrected by
the speed measured as phases finish; :class:`Countdown` keeps the time left shown from going up.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

MIN_SECONDS = 2.0  # no estimate until progress was watched this long ...
MIN_PROGRESS = 0.02  # ... and moved at least this much (2% of the whole)
WINDOW_SECONDS = 60.0  # the rate is measured over (about) the last minute


def estimate_remaining(samples: list[tuple[float, float]] | deque, *, min_seconds: float = MIN_SECONDS,
                       min_progress: float = MIN_PROGRESS) -> float | None:
    """Seconds left from ``(time, fraction done)`` samples (oldest first), or None without enough signal.

    The rate is the progress between the oldest and the newest sample divided by the time between
    them; the time left is what remains at that rate.  Finished (fraction ≥ 1) gives 0.
    """
    if not samples:
        return None
    t_last, f_last = samples[-1]
    if f_last >= 1.0:
        return 0.0
    t_first, f_first = samples[0]
    span, moved = t_last - t_first, f_last - f_first
    if span < min_seconds or moved < min_progress or not math.isfinite(span) or moved <= 0:
        return None
    return (1.0 - f_last) * span / moved


class EtaTracker:
    """Keeps recent ``(time, fraction)`` samples of one progress bar and estimates the time left.

    A fraction lower than the last one (a new bar, a restarted stage) starts over; the same one again
    adds nothing (a busy meter repeats itself).  Samples older
    than ``window_s`` are dropped, keeping one just before the window so the span covers it.
    """

    def __init__(self, window_s: float = WINDOW_SECONDS, min_seconds: float = MIN_SECONDS,
                 min_progress: float = MIN_PROGRESS):
        self.window_s, self.min_seconds, self.min_progress = window_s, min_seconds, min_progress
        self.samples: deque[tuple[float, float]] = deque()

    def reset(self) -> None:
        self.samples.clear()

    def add(self, now: float, fraction: float) -> None:
        if self.samples and fraction < self.samples[-1][1]:
            self.samples.clear()
        if self.samples and fraction == self.samples[-1][1]:
            return  # no news: the sample of when this fraction was reached stays the last
        self.samples.append((now, fraction))
        while len(self.samples) > 2 and now - self.samples[1][0] > self.window_s:
            self.samples.popleft()

    def remaining(self, now: float | None = None) -> float | None:
        """Seconds left.  With ``now``, the time since the last sample counts too (no news slows the rate)."""
        samples = list(self.samples)
        if now is not None and samples and now > samples[-1][0]:
            samples.append((now, samples[-1][1]))
        return estimate_remaining(samples, min_seconds=self.min_seconds, min_progress=self.min_progress)

    def remaining_between(self, now: float) -> float | None:
        """Seconds left at ``now`` for a meter that reports in coarse steps, without a jump between them.

        The work is taken to go on at the measured rate after the last sample, but never past the
        next step (the usual gain between samples), which has not come yet.  Once that much time has
        gone by, the wait counts as slower work, as if the next step were just arriving: the time
        left then grows slowly, from where the countdown reached.
        """
        base = self.remaining()
        if base is None or base == 0.0:
            return base
        (t_first, f_first), (t_last, f_last) = self.samples[0], self.samples[-1]
        rate = (f_last - f_first) / (t_last - t_first)
        step = (f_last - f_first) / max(1, len(self.samples) - 1)
        since = max(0.0, now - t_last)
        if rate * since <= step:
            return max(0.0, base - since)
        reached = min(1.0, f_last + step)
        return max(0.0, (1.0 - reached) * (now - t_first) / (reached - f_first))


# -- the whole run: one model for the overall bar and the time left --------------------------------

IO_KINDS = ("load", "save")  # reading and writing files: their speed says nothing about the compute phases
# Seconds assumed for a phase when no pre-flight estimate came with the run.  They only shape the
# overall bar until a phase has been measured; no time left is shown from them alone.
DEFAULT_SECONDS = {"load": 3.0, "measure": 20.0, "step": 30.0, "save": 3.0}
K_LIMITS = (0.02, 50.0)  # how far measured speed may stretch or shrink the plan
REVISE_RATIO = 1.25  # the shown time left may only go up when the model says 25% more ...
REVISE_MIN_S = 20.0  # ... and at least this many seconds more ...
REVISE_AFTER_S = 5.0  # ... for this long (a rate measured over a few seconds is noisy)
REVISED_SHOWN_S = 30.0  # "(revised)" stays on screen this long after a revision
MAX_RUNNING_FRACTION = 0.99  # a run still going never reads 100%
PART_MIN_SECONDS = 5.0  # a running part's rate counts once it was watched this long ...
PART_WINDOW_S = 300.0  # ... over its last five minutes (a few coarse steps make a noisy rate)


@dataclass(frozen=True)
class Phase:
    """One part of a run in its planned order: ``kind`` is load, measure, step or save."""

    name: str
    kind: str
    seconds: float  # planned (from the pre-flight estimate, or a default weight)
    # a measuring phase's meters and their planned seconds, named as their Progress events are
    parts: tuple[tuple[str, float], ...] = ()


def _phase_key(name: str) -> str:
    """"step 2: GPTQ" -> "step 2"; "Measure original" -> "measure original"."""
    key = " ".join(str(name).lower().split())
    return key.split(":", 1)[0].strip() if key.startswith("step") else key


def plan_phases(steps: int | Sequence[Sequence[str]],
                phase_seconds: Sequence[tuple[str, float]] | None = None,
                measure_parts: dict[str, Sequence[tuple[str, float]]] | None = None) -> tuple[list[Phase], bool]:
    """The run's phases in order (load, measure original, step 1…N, measure result, save) and their seconds.

    ``steps``: how many enabled steps, or for each one the names it may go by (its technique's key
    and title), which a named phase of ``phase_seconds`` ("step 1: gptq") must mention.
    ``phase_seconds`` (:attr:`Estimate.phase_seconds` of the pre-flight estimate) gives the planned
    seconds; the second value returned says whether they were used.  A list that does not describe
    this run (another pipeline, a missing or negative phase) is ignored: every phase then gets
    :data:`DEFAULT_SECONDS` and the plan is only a shape until measured.  ``measure_parts``
    (:attr:`Estimate.measure_parts`) names the meters each measuring phase will run, so that its time
    left counts only the meters still to come.
    """
    aliases = [()] * steps if isinstance(steps, int) else [tuple(a.lower() for a in names if a) for names in steps]
    phases = [Phase("load", "load", DEFAULT_SECONDS["load"]),
              Phase("measure original", "measure", DEFAULT_SECONDS["measure"]),
              *(Phase(f"step {n}", "step", DEFAULT_SECONDS["step"]) for n in range(1, len(aliases) + 1)),
              Phase("measure result", "measure", DEFAULT_SECONDS["measure"]),
              Phase("save", "save", DEFAULT_SECONDS["save"])]
    if not phase_seconds:
        return phases, False
    given: dict[str, tuple[str, float]] = {}
    try:
        for name, seconds in phase_seconds:
            given[_phase_key(name)] = (str(name).lower(), float(seconds))
    except (TypeError, ValueError):
        return phases, False
    if len(given) != len(phases):
        return phases, False
    planned = []
    for phase in phases:
        name, seconds = given.get(phase.name, ("", -1.0))
        if not (math.isfinite(seconds) and seconds >= 0):
            return phases, False
        if phase.kind == "step":
            names = aliases[int(phase.name.split()[1]) - 1]
            if names and not any(alias in name for alias in names):
                return phases, False  # an estimate of another pipeline
        parts = _parts((measure_parts or {}).get(phase.name, ()), seconds) if phase.kind == "measure" else ()
        planned.append(Phase(phase.name, phase.kind, seconds, parts))
    return planned, True


def _parts(parts: Sequence[tuple[str, float]], seconds: float) -> tuple[tuple[str, float], ...]:
    """A phase's meters, kept only when they are well formed and add up to the phase's seconds."""
    try:
        kept = tuple((str(name), float(s)) for name, s in parts)
    except (TypeError, ValueError):
        return ()
    if not kept or any(not (math.isfinite(s) and s >= 0) for _, s in kept) \
            or not math.isclose(sum(s for _, s in kept), seconds, rel_tol=1e-6, abs_tol=1e-6):
        return ()
    return kept


class Countdown:
    """The time left as shown: it counts down with the clock and never goes up, except by a revision.

    Each update takes the model's fresh figure.  A lower one is shown at once; a higher one is held
    back to the countdown (last shown minus the time since) unless it has been more than ``ratio``
    times the countdown and ``min_s`` seconds above it for ``after_s``: then the lowest of those
    figures is shown and marked revised.
    """

    def __init__(self, ratio: float = REVISE_RATIO, min_s: float = REVISE_MIN_S, after_s: float = REVISE_AFTER_S):
        self.ratio, self.min_s, self.after_s = ratio, min_s, after_s
        self.value: float | None = None
        self.at = 0.0
        self.above_since: float | None = None  # when the model's figures began to call for a revision
        self.lowest_end = math.inf  # the earliest end (time + figure) they gave since
        self.revised_at: float | None = None
        self.revisions = 0

    def update(self, now: float, fresh: float | None, may_revise: bool = True) -> float | None:
        """The time left to show at ``now`` given the model's ``fresh`` figure (None: none now).

        ``may_revise=False``: the figure is a guess from the plan, not a measured rate; it may lower
        the time left but not raise it.
        """
        if self.value is None:
            if fresh is not None:
                self.value, self.at = max(0.0, fresh), now
            return self.value
        ceiling = max(0.0, self.value - max(0.0, now - self.at))
        if fresh is None:
            fresh = ceiling
        if may_revise and fresh > ceiling * self.ratio and fresh - ceiling > self.min_s:
            if self.above_since is None:
                self.above_since, self.lowest_end = now, math.inf
            self.lowest_end = min(self.lowest_end, now + fresh)
        else:
            self.above_since = None
        if self.above_since is not None and now - self.above_since >= self.after_s:
            self.value, self.above_since = max(ceiling, self.lowest_end - now), None
            self.revised_at, self.revisions = now, self.revisions + 1
        else:
            self.value = min(max(0.0, fresh), ceiling)
        self.at = now
        return self.value

    def recently_revised(self, now: float, within: float = REVISED_SHOWN_S) -> bool:
        return self.revised_at is not None and now - self.revised_at <= within


class RunEta:
    """Overall progress and time left of a run, from its planned phases corrected by measured speed.

    Feed it the runner's stage changes and progress with the time they happened; ask :meth:`update`
    at any time.  The time left is what remains of the running phase plus the later phases' planned
    seconds times the speed measured so far (``measured / planned`` of the finished compute phases
    that did work, the same kind of phase preferred: measuring the result takes about what measuring
    the original took).  The running phase's part left comes from its recent rate once there is
    signal, else from its plan.  Load and save are file work and keep their planned seconds; a phase
    that reported no progress (the original's measurements reused from an earlier run) is not taken
    as a speed.  Without a pre-flight plan, no time left is given until one phase has been measured.

    The overall fraction is ``elapsed / (elapsed + time left)``: when a step's bar reaches 100%, its
    share is all elapsed, so the overall bar stands at that step's end.  Measuring runs several meters
    one after another, so there the plan's remainder also counts until the phase ends.  It never moves back;
    the time left shown never goes up except by a revision (:class:`Countdown`).
    """

    def __init__(self, phases: list[Phase], calibrated: bool, start: float, *,
                 ratio: float = REVISE_RATIO, min_s: float = REVISE_MIN_S):
        self.phases, self.calibrated, self.start = list(phases), calibrated, start
        self.finished: list[tuple[Phase, float, bool]] = []  # (phase, seconds it took, reported progress)
        self.current = -1  # index of the running phase
        self.phase_start = start
        self.worked = False
        self.part = ""
        self.part_known = False
        self.part_fraction = 0.0
        self.part_eta = EtaTracker(window_s=PART_WINDOW_S, min_seconds=PART_MIN_SECONDS)
        self.phase_measured = False  # a part of the running phase has had a measured rate
        self.parts_seen: set[str] = set()  # the running phase's meters that have reported progress
        self.countdown = Countdown(ratio, min_s)
        self.fraction = 0.0
        self.remaining: float | None = None  # as shown
        self.done = False

    # -- what happened ------------------------------------------------------------------------------
    def stage_started(self, now: float, position: int) -> None:
        """The runner entered its ``position``-th phase (1-based, as in ``StageStarted``)."""
        index = min(max(position - 1, 0), len(self.phases) - 1)
        while self.current < index:
            if self.current >= 0:
                self.finished.append((self.phases[self.current], max(0.0, now - self.phase_start), self.worked))
            self.current += 1
            self.phase_start, self.worked, self.phase_measured = now, False, False
            self.parts_seen = set()
        self.part, self.part_known, self.part_fraction = "", False, 0.0
        self.part_eta.reset()

    def progress(self, now: float, part: str, fraction: float, known: bool = True) -> None:
        """A ``Progress`` event of the running phase: ``part`` names the meter (a phase may run several)."""
        if self.current < 0:
            return
        self.worked = True
        self.parts_seen.add(part)
        if part != self.part or fraction < self.part_fraction:
            self.part = part
            self.part_eta.reset()
        self.part_known, self.part_fraction = known, min(1.0, max(0.0, fraction)) if known else 0.0
        if known:
            self.part_eta.add(now, self.part_fraction)

    def finish(self) -> None:
        self.done, self.fraction, self.remaining = True, 1.0, 0.0

    # -- the model --------------------------------------------------------------------------------
    def speed(self, kind: str, now: float) -> float | None:
        """Measured seconds per planned second for phases of ``kind`` (None: nothing measured, no plan)."""
        if kind in IO_KINDS:
            return 1.0
        pairs = [(phase.kind, took, phase.seconds) for phase, took, worked in self.finished
                 if worked and phase.kind not in IO_KINDS and phase.seconds > 0]
        phase = self.phases[self.current] if self.current >= 0 else None
        part_left = self._part_left(now)
        if phase is not None and phase.kind == "step" and phase.seconds > 0 and part_left is not None:
            pairs.append((phase.kind, now - self.phase_start + part_left, phase.seconds))
        same = [p for p in pairs if p[0] == kind] or pairs
        if not same:
            return 1.0 if self.calibrated else None
        low, high = K_LIMITS
        return min(high, max(low, sum(p[1] for p in same) / sum(p[2] for p in same)))

    def _part_left(self, now: float) -> float | None:
        return self.part_eta.remaining_between(now) if self.part_known else None

    def _plan_known(self, kind: str) -> bool:
        """Whether a phase of ``kind`` has seconds worth adding: a pre-flight plan, or one measured."""
        return self.calibrated or any(worked and phase.kind == kind for phase, _took, worked in self.finished)

    def model_remaining(self, now: float) -> tuple[float, bool]:
        """(seconds left by the model, whether every figure in it was measured or planned)."""
        return self._model(now)[:2]

    def _model(self, now: float) -> tuple[float, bool, bool]:
        """(seconds left, known, firm): not firm between two parts of a phase that had a measured rate,
        where the running phase's share is only its plan (it may lower the time left, not raise it)."""
        known, firm = True, True

        def planned(phase: Phase) -> float:
            nonlocal known
            k = self.speed(phase.kind, now)
            if k is None:
                known, k = False, 1.0
            return phase.seconds * k

        left = 0.0
        if self.current >= 0:
            phase = self.phases[self.current]
            part_left = self._part_left(now)
            if phase.parts:
                # a measuring phase whose meters are known: the running one's rate where measured, then the
                # planned seconds of those still to come (at the measured speed)
                self.phase_measured |= part_left is not None
                left = (part_left or 0.0) + self._parts_to_come(phase, now, part_left is not None)
                firm = part_left is not None or not self.phase_measured
            elif part_left is not None:
                left, self.phase_measured = part_left, True
                if phase.kind == "measure" and self._plan_known("measure"):
                    # measuring runs several meters in turn (perplexity, task scores, speed, closeness to
                    # the original): the plan's remainder counts for the ones still to come
                    plan_left = planned(phase) - (now - self.phase_start)
                    if plan_left > part_left:
                        left, firm = plan_left, False
            else:
                left = max(0.0, planned(phase) - (now - self.phase_start))
                firm = not self.phase_measured
        for phase in self.phases[self.current + 1:]:
            left += planned(phase)
        return left, known, firm

    def _parts_to_come(self, phase: Phase, now: float, running_measured: bool) -> float:
        """Planned seconds (at the measured speed) of the running phase's meters that have not reported yet,
        plus the running meter's unfinished share of its plan while its own rate is not measured yet."""
        k = self.speed(phase.kind, now) or 1.0
        left = 0.0
        for name, seconds in phase.parts:
            if name == self.part and not running_measured:
                left += seconds * k * (1.0 - self.part_fraction)
            elif name not in self.parts_seen:
                left += seconds * k
        return left

    def update(self, now: float) -> None:
        """Work out the overall fraction and the time left to show at ``now``."""
        if self.done:
            return
        fresh, known, firm = self._model(now)
        self.remaining = self.countdown.update(now, fresh if known else None, firm)
        left = self.remaining if self.remaining is not None else fresh
        elapsed = max(0.0, now - self.start)
        if elapsed + left > 0:
            self.fraction = max(self.fraction, min(MAX_RUNNING_FRACTION, elapsed / (elapsed + left)))

    def revised(self, now: float) -> bool:
        """Whether the time left went up by a revision in the last half minute."""
        return self.countdown.recently_revised(now)


def eta_text(seconds: float | None, format_duration) -> str:
    """"about 3 min left", or "estimating…" while there is no estimate yet."""
    if seconds is None:
        return "estimating…"
    if seconds <= 0:
        return "almost done"
    return f"about {format_duration(seconds)} left"
