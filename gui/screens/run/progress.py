"""The Run page's two progress bars: the whole run, and the step (or stage) running now, each with an ETA.

The runner announces each stage with a ``StageStarted`` event (loading, measuring the original, every
step, measuring the result, saving); ``Progress`` events move the lower bar within it.  The overall
fraction is ``(stages done + fraction of this one) / stages``.  Times left come from the rate of
progress (:mod:`core.engine.eta`) and read "estimating…" until there is enough signal.  Events only update
numbers; the bars are repainted at most every 100 ms (QProgressBar.setValue repaints at once) and
the labels by a 1 s clock, so a burst of progress events costs the GUI thread almost nothing.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QGridLayout, QLabel, QProgressBar, QWidget

from core.engine.eta import EtaTracker, eta_text
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
                                "result, saving. The time left is estimated from how fast it has moved so far.")
        self.stage_label = QLabel("Current stage")
        self.stage_bar = _bar("The part running now (a technique's layers, an evaluation, loading). The time "
                              "left is estimated from its recent speed.")
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.overall_label, 0, 0)
        layout.addWidget(self.overall_bar, 0, 1)
        layout.addWidget(self.stage_label, 1, 0)
        layout.addWidget(self.stage_bar, 1, 1)
        layout.setColumnStretch(0, 1)
        layout.setColumnStretch(1, 2)
        self.overall_eta = EtaTracker(window_s=float("inf"))  # stages differ in speed: use the whole run
        self.stage_eta = EtaTracker()
        self.clock = QTimer(self, interval=1000, timeout=self.refresh)
        self.bar_timer = QTimer(self, interval=BAR_MS, timeout=self.apply)
        self._stage_value: tuple[int, int] | None = None  # (maximum, value) waiting to be shown
        self.reset()

    # -- lifecycle ------------------------------------------------------------------------------
    def reset(self, steps: int = 1) -> None:
        self.started = time.monotonic()
        self.position, self.total = 0, steps + 4
        self.title = "Starting"
        self.sub_stage = ""
        self.total_known = True
        self.stage_fraction = 0.0
        self.overall = 0.0
        self.running = False
        self.overall_eta.reset()
        self.stage_eta.reset()
        self.overall_bar.setValue(0)
        self.stage_bar.setRange(0, RANGE)
        self.stage_bar.setValue(0)

    def start(self, steps: int) -> None:
        self.reset(steps)
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
        self.position, self.total, self.title = event.position, event.total, event.title
        self.sub_stage, self.stage_fraction, self.total_known = "", 0.0, True
        self.stage_eta.reset()
        self._stage_value = (RANGE, 0)
        self._advance(0.0)
        self.apply()
        self.refresh()

    def progress(self, event: Any) -> None:
        """A ``Progress`` event of the running stage (a stage may run several meters one after another)."""
        now = time.monotonic()
        if event.stage != self.sub_stage:
            self.sub_stage = event.stage
            self.stage_eta.reset()
        self.stage_fraction = event.fraction
        self.stage_eta.add(now, event.fraction)
        self.total_known = bool(event.total)  # else the bar is a busy indicator (range 0..0)
        self._stage_value = (RANGE if event.total else 0, round(event.fraction * RANGE))
        self._advance(event.fraction)

    def _advance(self, fraction: float) -> None:
        if self.position <= 0 or self.total <= 0:
            return
        overall = min(1.0, (self.position - 1 + fraction) / self.total)
        if overall > self.overall:
            self.overall = overall
            self.overall_eta.add(time.monotonic(), overall)

    def finish(self, text: str, stage_text: str) -> None:
        self.stop()
        self._stage_value = None
        self.overall, self.stage_fraction = 1.0, 1.0
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
    def overall_text(self, now: float) -> str:
        elapsed = format_duration(now - self.started)
        where = f"{self.title} (stage {self.position} of {self.total})" if self.position else "Starting"
        return f"{where} — {self.overall:.0%}, {elapsed} so far, {eta_text(self.overall_eta.remaining(now), format_duration)}"

    def stage_text(self, now: float) -> str:
        name = self.sub_stage or self.title
        if not self.total_known:
            return f"{name}: working…"
        return f"{name}: {self.stage_fraction:.0%}, {eta_text(self.stage_eta.remaining(now), format_duration)}"

    def refresh(self) -> None:
        if not self.running:
            return
        now = time.monotonic()
        self.overall_label.setText(self.overall_text(now))
        self.stage_label.setText(self.stage_text(now))
