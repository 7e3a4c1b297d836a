"""The Run page's two progress bars: the whole run, and the step (or stage) running now, each with an ETA.

The runner announces each stage with a ``StageStarted`` event (loading, measuring the original, every
step, measuring the result, saving); ``Progress`` events move the lower bar within it.  The overall bar
and the run's time left come from one model, :class:`core.engine.eta.RunEta`: the phases weighted by
the pre-flight estimate's seconds (when the Pipeline page had one), corrected by the measured speed.
That time left counts down and only goes up by a marked revision; when the lower bar reaches 100%, the
overall bar stands at the end of that phase.  Times left read "estimating…" until there is enough
signal.  Events only update numbers; the bars are repainted at most every 100 ms (QProgressBar.setValue
repaints at once) and the labels by a 1 s clock, so a burst of progress events costs the GUI thread
almost nothing.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QGridLayout, QLabel, QProgressBar, QWidget

from core.engine.eta import Countdown, EtaTracker, Phase, RunEta, eta_text, plan_phases
from gui.widgets.formatting import format_duration

RANGE = 1000
BAR_MS = 100


def _bar(tooltip: str) -> QProgressBar:
    bar = QProgressBar()
    bar.setRange(0, RANGE)
    bar.setTextVisible(False)
    bar.setToolTip(tooltip)
    return bar


class RunProgress(QWidget):
    """Overall bar ("Step 2 of 3: GPTQ") and current-stage bar, with elapsed time and time left."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.overall_label = QLabel("Overall")
        self.overall_bar = _bar("The whole run: loading, measuring the original, every step, measuring the "
                                "result, saving, each weighted by its share of the pre-flight estimate's time. "
                                "The time left starts from that estimate and is corrected by the speed measured "
                                "as the run goes; it only counts down, unless the run turns out much slower "
                                "(then it says 'revised').")
        self.stage_label = QLabel("Current stage")
        self.stage_bar = _bar("The part running now (a technique's layers, an evaluation, loading). Measuring a "
                              "model runs several measurements one after another (perplexity, task scores, "
                              "speed, closeness to the original): this bar shows the one running now. The "
                              "time left is estimated from its recent speed.")
        for label in (self.overall_label, self.stage_label):
            label.setWordWrap(True)  # a long line wraps instead of squeezing its bar (1024 px windows)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.overall_label, 0, 0)
        layout.addWidget(self.overall_bar, 0, 1)
        layout.addWidget(self.stage_label, 1, 0)
        layout.addWidget(self.stage_bar, 1, 1)
        layout.setColumnStretch(0, 1)
        layout.setColumnStretch(1, 2)
        self.stage_eta = EtaTracker()
        self.stage_countdown = Countdown(min_s=10.0)
        self.plan: tuple[list[Phase], bool] | None = None
        self.clock = QTimer(self, interval=1000, timeout=self.refresh)
        self.bar_timer = QTimer(self, interval=BAR_MS, timeout=self.apply)
        self._stage_value: tuple[int, int] | None = None  # (maximum, value) waiting to be shown
        self.reset()

    # -- lifecycle ------------------------------------------------------------------------------
    def reset(self, steps: int = 1, plan: tuple[list[Phase], bool] | None = None) -> None:
        self.started = time.monotonic()
        self.plan = plan if plan is not None else plan_phases(steps)
        self.eta = RunEta(*self.plan, self.started)
        self.position, self.total = 0, len(self.plan[0])
        self.title = "Starting"
        self.sub_stage = ""
        self.total_known = True
        self.stage_fraction = 0.0
        self.overall = 0.0
        self.running = False
        self.stage_eta.reset()
        self.stage_countdown = Countdown(min_s=10.0)
        self._dirty = False
        self.overall_bar.setValue(0)
        self.stage_bar.setRange(0, RANGE)
        self.stage_bar.setValue(0)

    def start(self, steps: int, plan: tuple[list[Phase], bool] | None = None) -> None:
        """A run of ``steps`` enabled steps starts; ``plan``: its phases and planned seconds
        (:func:`core.engine.eta.plan_phases`), else default weights."""
        self.reset(steps, plan)
        self.running = True
        self.clock.start()
        self.bar_timer.start()
        self.refresh()

    def stop(self) -> None:
        self.apply()
        self.running = False
        self.clock.stop()
        self.bar_timer.stop()

    def apply(self) -> None:
        """Show the latest numbers on the bars (on the 100 ms timer, and when a stage starts or ends)."""
        if self._dirty and self.running:
            self._dirty = False
            self._update_model(time.monotonic())
        overall = round(self.overall * RANGE)
        if self.overall_bar.value() != overall:
            self.overall_bar.setValue(overall)
        if self._stage_value is not None:
            maximum, value = self._stage_value
            self._stage_value = None
            if self.stage_bar.maximum() != maximum:
                self.stage_bar.setRange(0, maximum)
            if self.stage_bar.value() != value:
                self.stage_bar.setValue(value)

    # -- events --------------------------------------------------------------------------------
    def stage_started(self, event: Any) -> None:
        """A ``StageStarted`` event: the lower bar starts over for it."""
        now = time.monotonic()
        if event.total != len(self.eta.phases):  # not the run this plan was made for: default weights
            self.eta = RunEta(*plan_phases(max(0, event.total - 4)), self.started)
        self.position, self.total, self.title = event.position, event.total, event.title
        self.sub_stage, self.stage_fraction, self.total_known = "", 0.0, True
        self.stage_eta.reset()
        self.stage_countdown = Countdown(min_s=10.0)
        self.eta.stage_started(now, event.position)
        self._stage_value = (RANGE, 0)
        self._dirty = True
        self.apply()
        self.refresh()

    def progress(self, event: Any) -> None:
        """A ``Progress`` event of the running stage (a stage may run several meters one after another)."""
        now = time.monotonic()
        if event.stage != self.sub_stage or event.fraction < self.stage_fraction:
            self.sub_stage = event.stage
            self.stage_eta.reset()
            self.stage_countdown = Countdown(min_s=10.0)
        self.stage_fraction = event.fraction
        self.stage_eta.add(now, event.fraction)
        self.total_known = bool(event.total)  # else the bar is a busy indicator (range 0..0)
        self._stage_value = (RANGE if event.total else 0, round(event.fraction * RANGE))
        self.eta.progress(now, event.stage, event.fraction, bool(event.total))
        self._dirty = True

    def _update_model(self, now: float) -> None:
        """The run's model at ``now``: the overall fraction and the time left shown."""
        self.eta.update(now)
        self.overall = self.eta.fraction

    def finish(self, text: str, stage_text: str) -> None:
        self.stop()
        self._stage_value = None
        self.overall, self.stage_fraction = 1.0, 1.0
        self.eta.finish()
        self.overall_bar.setValue(RANGE)
        self.stage_bar.setRange(0, RANGE)
        self.stage_bar.setValue(RANGE)
        self.overall_label.setText(text)
        self.stage_label.setText(stage_text)

    def end(self, stage_text: str) -> None:
        """Stopped without finishing (cancelled or failed): the bars stay where they were, and no time
        left is shown any more (the run will not go on)."""
        self.stop()
        self._stage_value = None
        self.stage_bar.setRange(0, RANGE)
        self.stage_label.setText(stage_text)
        elapsed = format_duration(time.monotonic() - self.started)
        where = f"{self.title} (stage {self.position} of {self.total})" if self.position else "Starting"
        self.overall_label.setText(f"{where} — stopped at {self.overall:.0%} after {elapsed}")

    # -- labels ----------------------------------------------------------------------------------
    def time_left_text(self, now: float) -> str:
        """"about 3 min left", "estimating…", with "(revised)" for half a minute after a revision."""
        text = eta_text(self.eta.remaining, format_duration)
        return text + " (revised: slower than expected)" if self.eta.revised(now) else text

    def overall_text(self, now: float) -> str:
        elapsed = format_duration(now - self.started)
        where = f"{self.title} (stage {self.position} of {self.total})" if self.position else "Starting"
        return f"{where} — {self.overall:.0%}, {elapsed} so far, {self.time_left_text(now)}"

    def stage_text(self, now: float) -> str:
        name = self.sub_stage or self.title
        if not self.total_known:
            return f"{name}: working…"
        left = self.stage_countdown.update(now, self.stage_eta.remaining_between(now)) if self.stage_eta.samples else None
        return f"{name}: {self.stage_fraction:.0%}, {eta_text(left, format_duration)}"

    def refresh(self) -> None:
        if not self.running:
            return
        now = time.monotonic()
        self._dirty = False
        self._update_model(now)
        self.overall_label.setText(self.overall_text(now))
        self.stage_label.setText(self.stage_text(now))
