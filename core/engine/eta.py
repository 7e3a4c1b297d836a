"""Time left, estimated from the rate progress is being made.

Pure functions and a small sample keeper, no clock of their own: callers pass the time, so tests
feed made-up timelines.  An estimate needs signal: until progress moved by ``min_progress`` over
at least ``min_seconds`` there is none (the GUI says "estimating…").  The rate is measured over a
recent window so that a slow start (loading, a first slow layer) does not skew it forever.
"""

from __future__ import annotations

import math
from collections import deque

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

    A fraction lower than the last one (a new bar, a restarted stage) starts over.  Samples older
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
        self.samples.append((now, fraction))
        while len(self.samples) > 2 and now - self.samples[1][0] > self.window_s:
            self.samples.popleft()

    def remaining(self, now: float | None = None) -> float | None:
        """Seconds left.  With ``now``, the time since the last sample counts too (no news slows the rate)."""
        samples = list(self.samples)
        if now is not None and samples and now > samples[-1][0]:
            samples.append((now, samples[-1][1]))
        return estimate_remaining(samples, min_seconds=self.min_seconds, min_progress=self.min_progress)


def eta_text(seconds: float | None, format_duration) -> str:
    """"about 3 min left", or "estimating…" while there is no estimate yet."""
    if seconds is None:
        return "estimating…"
    if seconds <= 0:
        return "almost done"
    return f"about {format_duration(seconds)} left"
