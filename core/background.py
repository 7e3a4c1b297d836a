"""Running one blocking call (a conversion, a library download) as a job that keeps yielding.

The call runs in a helper thread; the job yields a Progress event every ``poll`` seconds so the
app shows that work is going on (with the elapsed time) and every yield stays a cancel point.
A cancelled job stops waiting at once; the call itself finishes in the background, so whatever
it writes must be atomic (a cache folder renamed into place, for example).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from core.events import Progress

T = TypeVar("T")


def iter_blocking(call: Callable[[], T], stage: str, poll: float = 0.25,
                  progress: Callable[[], tuple[float, float]] | None = None) -> Generator[Any, None, T]:
    """Run ``call()`` in a thread; yield Progress until it returns; return its value.

    ``progress()`` may report (done, total) while the call runs; without it the total is 0 (unknown).
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # re-raised in the job's own thread below
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=stage, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll)
        done, total = progress() if progress else (0, 0)
        yield Progress(stage, done, total)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
