"""The job worker hands itself back to the GUI thread before its thread ends (no cross-thread destruction)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QCoreApplication, Qt  # noqa: E402
from shiboken6 import isValid  # noqa: E402

from gui.worker import JobHandle  # noqa: E402


def _job():
    yield "one event"
    return 42


def test_worker_is_destroyed_in_the_gui_thread(qtbot):
    """Destroyed in its own thread, the worker's destructor could deadlock with the GUI thread
    (Qt's connection lock against the GIL); it must end its life in the GUI thread instead."""
    handle = JobHandle(_job)
    seen = {}
    worker = handle.worker
    worker.done.connect(lambda: seen.update(home=worker.thread() is QCoreApplication.instance().thread()),
                        Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(handle.done, timeout=30_000):
        with qtbot.waitSignal(handle.finished, timeout=30_000) as finished:
            handle.start()
    assert finished.args == [42] and seen == {"home": True}
    qtbot.waitUntil(lambda: not isValid(worker), timeout=5_000)  # deleted later, by the GUI thread's loop


def test_settle_delays_the_job_and_a_cancel_during_it_ends_the_job_unstarted(qtbot):
    """``settle_s`` holds the job back so the GUI paints first; cancelling then never starts the job."""
    import time

    from gui.worker import start_job

    started = []

    def job():
        started.append(time.monotonic())
        yield "event"
        return 1

    begun = time.monotonic()
    with qtbot.waitSignal(start_job(job, settle_s=0.2).finished, timeout=30_000):
        pass
    assert started and started[0] - begun >= 0.19

    started.clear()
    handle = start_job(job, settle_s=30.0)
    with qtbot.waitSignal(handle.cancelled, timeout=5_000):
        handle.cancel()  # ends the 30 s wait at once
    assert not started
