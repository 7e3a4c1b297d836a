"""Run a core job (a generator of events) in a QThread and hand its events to the GUI thread.

The recipe (ARCHITECTURE pattern 3): the worker has no parent and is moved to a fresh QThread;
``thread.started`` runs it; when it is done, the worker moves itself back to the GUI thread and
``thread.quit`` runs; ``thread.finished`` deletes the worker and the thread, both in the GUI thread;
the application's ``aboutToQuit`` cancels and waits.
The worker never touches widgets: it only emits signals.

Events do not cross the thread boundary one signal each: the worker appends them to a deque and
the JobHandle hands them on in the GUI thread every 50 ms (and before finished/errored/cancelled),
so a burst of events costs the GUI thread one wake-up and one GIL hand-over, not hundreds
(measured with bench/bench_ui_stall.py).

A job is cancelled by closing its generator between two events (every ``yield`` is a cancel
point; ``job.close()`` lets the engine clean up in its ``finally`` blocks).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, QTimer, Signal, Slot
from shiboken6 import isValid

from core.events import Progress  # plain dataclasses: no torch

JobFactory = Callable[[], Generator[Any, None, Any]]
MIN_PROGRESS_STEP = 0.001  # forward a Progress event only when it moved at least 0.1% ...
UNKNOWN_TOTAL_INTERVAL_S = 0.1  # ... or, when its total is unknown, at most this often
DELIVER_MS = 50  # a JobHandle hands queued events to the GUI thread in batches this often


class JobWorker(QObject):
    """Runs ``job_factory()`` to the end in whatever thread it lives in, emitting what happens.

    Exactly one of ``finished(result)``, ``errored(exception)`` or ``cancelled()`` is emitted,
    then ``done()`` (used to stop the thread).
    """

    job_event = Signal(object)
    finished = Signal(object)
    errored = Signal(object)
    cancelled = Signal()
    done = Signal()

    def __init__(self, job_factory: JobFactory, settle_s: float = 0.0):
        super().__init__()  # no parent: it is moved to its own thread
        self._job_factory = job_factory
        self._settle_s = settle_s
        self._cancel = threading.Event()
        self._last_stage: str | None = None
        self._last_fraction = -1.0
        self._last_time = 0.0
        # Set by JobHandle: events go into this deque (thread-safe appends) instead of one queued signal
        # each, so the GUI thread takes the GIL once per batch rather than once per event.
        self.queue: deque | None = None

    def cancel(self) -> None:
        """Ask the job to stop at its next event (safe to call from any thread)."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def _worth_forwarding(self, event: Any) -> bool:
        if not isinstance(event, Progress):
            return True
        now = time.monotonic()
        fraction = event.fraction
        forward = (event.stage != self._last_stage
                   or abs(fraction - self._last_fraction) >= MIN_PROGRESS_STEP
                   or (fraction >= 1.0 > self._last_fraction)
                   or (not event.total and now - self._last_time >= UNKNOWN_TOTAL_INTERVAL_S))
        if forward:
            self._last_stage, self._last_fraction, self._last_time = event.stage, fraction, now
        return forward

    @Slot()
    def run(self) -> None:
        job = None
        try:
            if self._settle_s:
                # Idle (GIL released) while the GUI thread paints the page that shows this job;
                # a cancel ends the wait at once.
                self._cancel.wait(self._settle_s)
            job = self._job_factory()
            while True:
                if self._cancel.is_set():
                    job.close()  # the cancel point: the engine's finally blocks clean up
                    self.cancelled.emit()
                    return
                try:
                    event = next(job)
                except StopIteration as stop:
                    result = stop.value
                    break
                if self._worth_forwarding(event):
                    if self.queue is not None:
                        self.queue.append(event)
                    else:
                        self.job_event.emit(event)
            if self._cancel.is_set():  # cancelled while the last step ran: the user asked to drop it
                self.cancelled.emit()
            else:
                self.finished.emit(result)
        except BaseException as exc:  # one error path: every failure reaches the GUI's handler
            if job is not None:
                job.close()
            self.errored.emit(exc)
        finally:
            # Hand the worker back to the GUI thread before its thread ends, so it is destroyed there
            # (JobHandle._on_thread_finished).  Destroyed in this thread, its C++ destructor held Qt's
            # connection lock while PySide waited for the GIL, and the GUI thread, holding the GIL,
            # waited for that lock in a disconnect (QTextEdit.setHtml): a deadlock seen in the tests.
            app = QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())
            self.done.emit()


class JobHandle(QObject):
    """The GUI thread's handle on a running job: relays the worker's signals, cancels, waits.

    Its signals are emitted in the GUI thread, so any callable (even a lambda) connected to them
    runs there; connect before :meth:`start`, or pass callbacks to :func:`start_job`.
    """

    job_event = Signal(object)
    finished = Signal(object)
    errored = Signal(object)
    cancelled = Signal()
    done = Signal()

    _running: set[JobHandle] = set()  # keeps Python references while threads run (GUI thread only)

    def __init__(self, job_factory: JobFactory, settle_s: float = 0.0):
        super().__init__()
        self.worker = JobWorker(job_factory, settle_s)
        self.thread = QThread()
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        self.worker.done.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)
        self.thread.finished.connect(self._on_thread_finished)
        self.thread.finished.connect(self.thread.deleteLater)
        # Relays: these slots belong to a QObject of the GUI thread, so Qt queues them there.
        self.worker.job_event.connect(self._relay_event)
        self.worker.finished.connect(self._relay_finished)
        self.worker.errored.connect(self._relay_errored)
        self.worker.cancelled.connect(self._relay_cancelled)
        self._started = False
        self._done = False
        self._events: deque = deque()
        self.worker.queue = self._events
        self._deliver_timer = QTimer(self, interval=DELIVER_MS, timeout=self._deliver)

    def start(self) -> JobHandle:
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.cancel_and_wait)
        JobHandle._running.add(self)
        self._started = True
        self._deliver_timer.start()
        self.thread.start()
        return self

    def cancel(self) -> None:
        if not self._done:
            self.worker.cancel()

    def is_running(self) -> bool:
        return self._started and not self._done

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until the thread ended (True) or the timeout passed (False)."""
        if self._done or not self._started or not isValid(self.thread):
            return True
        ended = self.thread.wait(timeout_ms) if timeout_ms >= 0 else self.thread.wait()
        if ended:
            self._done = True  # the queued thread-finished slot may not have run yet
        return ended

    @Slot()
    def cancel_and_wait(self) -> None:
        self.cancel()
        self.wait()

    @Slot(object)
    def _relay_event(self, event: Any) -> None:
        self.job_event.emit(event)

    @Slot()
    def _deliver(self) -> None:
        """Hand every queued event to the GUI, in order (runs on a timer and before the final signal)."""
        for _ in range(len(self._events)):
            self.job_event.emit(self._events.popleft())

    @Slot(object)
    def _relay_finished(self, result: Any) -> None:
        self._deliver()
        self.finished.emit(result)

    @Slot(object)
    def _relay_errored(self, exc: BaseException) -> None:
        self._deliver()
        self.errored.emit(exc)

    @Slot()
    def _relay_cancelled(self) -> None:
        self._deliver()
        self.cancelled.emit()

    @Slot()
    def _on_thread_finished(self) -> None:
        self._deliver()
        self._deliver_timer.stop()
        self._done = True
        app = QCoreApplication.instance()
        if app is not None:
            try:
                app.aboutToQuit.disconnect(self.cancel_and_wait)
            except (RuntimeError, TypeError):
                pass
        JobHandle._running.discard(self)
        if isValid(self.worker):
            self.worker.deleteLater()  # in the GUI thread, now that the worker's thread has ended
        self.done.emit()


def start_job(job_factory: JobFactory, *, on_event: Callable[[Any], None] | None = None,
              on_finished: Callable[[Any], None] | None = None,
              on_errored: Callable[[BaseException], None] | None = None,
              on_cancelled: Callable[[], None] | None = None,
              on_done: Callable[[], None] | None = None, settle_s: float = 0.0) -> JobHandle:
    """Start ``job_factory()`` in a new thread and return its handle; callbacks run in the GUI thread.

    ``settle_s``: the thread waits this long before the job begins, so the GUI thread can first
    repaint what the start changed without competing with the job for the GIL and the CPU.
    """
    handle = JobHandle(job_factory, settle_s)
    for signal, callback in ((handle.job_event, on_event), (handle.finished, on_finished),
                             (handle.errored, on_errored), (handle.cancelled, on_cancelled),
                             (handle.done, on_done)):
        if callback is not None:
            signal.connect(callback)
    return handle.start()


def call_as_job(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Generator[Any, None, Any]:
    """Wrap a plain (slow) call as a job without events, so it can run in a JobWorker."""
    if False:  # pragma: no cover - the yield makes this a generator
        yield
    return function(*args, **kwargs)
