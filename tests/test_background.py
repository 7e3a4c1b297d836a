import threading
import time

import pytest

from core.background import iter_blocking
from core.events import Progress


def test_yields_while_waiting_and_returns_value():
    gate = threading.Event()

    def slow():
        gate.wait(5)
        return 42

    job = iter_blocking(slow, "working", poll=0.01)
    first = next(job)
    assert isinstance(first, Progress) and first.stage == "working" and first.total == 0
    gate.set()
    with pytest.raises(StopIteration) as stop:
        while True:
            next(job)
    assert stop.value.value == 42


def test_error_is_raised_in_the_job():
    def broken():
        time.sleep(0.02)
        raise ValueError("bad file")

    with pytest.raises(ValueError, match="bad file"):
        list(iter_blocking(broken, "working", poll=0.01))
