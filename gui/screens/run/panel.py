"""The Run page: run the pipeline in a background thread, watch it, cancel it, read the result.

The core runner is a generator of events; ``start_job`` runs it in a QThread, so the window never
freezes.  Events update progress and the log at once, and the plots through their 50 ms redraw.
Cancel stops at the runner's next cancel point; its output folder is written atomically at the
very end, so a cancelled run leaves nothing behind.  A run going for more than a minute asks before it
is stopped (:mod:`gui.screens.run.stop_dialog`).  The overall bar and time left use the Pipeline page's
pre-flight estimate of each phase when ``estimate_source`` gives one (:mod:`core.engine.eta`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.engine.eta import Phase, plan_phases
from core.engine.registry import get_technique
from gui.errors import show_error
from gui.screens.run.progress import RunProgress
from gui.screens.run.stop_dialog import ASK_AFTER_S, confirm_stop
from gui.screens.run.summary import ResultTable, summary_header
from gui.widgets.formatting import format_bytes, format_duration
from gui.widgets.labels import heading, rich_label
from gui.widgets.plots import LivePlots
from gui.widgets.verdict import verdict_html
from gui.worker import JobHandle, start_job

# The run's thread waits this long before loading the model, so the Run page's first repaint (the
# heaviest: every plot redrawn empty) has the GIL and the CPU to itself (bench/bench_ui_stall.py).
FIRST_PAINT_S = 0.15

# Returns (recipe, output folder, device) for a new run, or raises StudioError saying what is missing.
RunSource = Callable[[], tuple[Any, Path, str]]
# Returns the pre-flight estimate of the pipeline about to run (with ``phase_seconds``), or None.
EstimateSource = Callable[[], Any]


def _metric_text(metric: Any) -> str:
    if metric.name.startswith("bytes"):
        return format_bytes(metric.value)
    value = f"{metric.value:,.0f}" if abs(metric.value) >= 1e4 else f"{metric.value:.4g}"
    return f"{value} {metric.unit}".strip()


def trains(recipe: Any) -> bool:
    """Whether an enabled step of ``recipe`` trains, and so reports a loss (distillation, classifier training,
    quantization-aware training: their registrations say ``Needs(trains=True)``)."""
    return any(get_technique(step.technique).needs.trains for _, step in recipe.enabled_steps())


class RunPanel(QWidget):
    run_finished = Signal(object)  # the run's report (dict)
    busy_changed = Signal(bool)

    def __init__(self, run_source: RunSource | None = None, parent: QWidget | None = None, *,
                 estimate_source: EstimateSource | None = None):
        super().__init__(parent)
        self.run_source = run_source
        self.estimate_source = estimate_source
        self.job: JobHandle | None = None
        self.output_dir: Path | None = None
        self.report: dict | None = None
        self._started: float | None = None  # when the last run started (time.monotonic)
        self._last_run: tuple[Any, Path, str] | None = None  # (recipe, output folder, device) of the last start

        self.run_button = QPushButton("Run  (Ctrl+R)")
        self.run_button.setDefault(True)
        self.run_button.setToolTip("Compress the model with the recipe on the Pipeline page, in the background. "
                                   "The window stays usable.")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel  (Esc)")
        self.cancel_button.setToolTip("Stop at the next safe point. Nothing is written: the output folder "
                                      "only appears when a run completes. Once a run has gone on for more "
                                      "than a minute, this button and Esc ask first.")
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton("Resume training")
        self.resume_button.setToolTip("Continue the cancelled run from its last training checkpoint, into the "
                                      "same output folder, instead of training again from the start. Run starts "
                                      "over and discards the checkpoint.")
        self.resume_button.clicked.connect(self.resume)
        self.resume_button.hide()
        self.status = QLabel("Set up the pipeline, then press Run.")
        self.status.setWordWrap(True)
        self.progress = RunProgress()
        self.overall_bar, self.stage_bar = self.progress.overall_bar, self.progress.stage_bar
        self.plots = LivePlots()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setToolTip("What the run did, line by line: steps, measurements, warnings.")
        self.summary = rich_label("The before/after numbers appear here when a run is done.")
        self.result_table = ResultTable()
        self.open_button = QPushButton("Open output folder")
        self.open_button.setToolTip("Show the saved model, its recipe.yaml and report.json in your file manager.")
        self.open_button.clicked.connect(self.open_output)
        self._build_layout()
        self.result_table.show_report(None)
        self._set_busy(False)

    def _build_layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.run_button)
        top.addWidget(self.cancel_button)
        top.addWidget(self.resume_button)
        top.addWidget(self.status, 1)
        log_group = QGroupBox("Log")
        QVBoxLayout(log_group).addWidget(self.log)
        result_group = QGroupBox("Result")
        result_layout = QVBoxLayout(result_group)
        result_layout.addWidget(self.summary)
        result_layout.addWidget(self.result_table, 1)
        result_layout.addStretch(0)
        result_layout.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.bottom = bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(log_group)
        bottom.addWidget(result_group)
        bottom.setSizes([360, 640])
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.plots)
        self.splitter.addWidget(bottom)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([420, 260])
        self.splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Run"))
        layout.addLayout(top)
        layout.addWidget(self.progress)
        layout.addWidget(self.splitter, 1)

    def _make_room_for_result(self) -> None:
        """A finished run's numbers matter more than the live plots: give the result most of the page."""
        height, width = self.splitter.height(), self.bottom.width()
        if height > 0 and width > 0:
            self.splitter.setSizes([int(height * 0.45), height - int(height * 0.45)])
            self.bottom.setSizes([int(width * 0.3), width - int(width * 0.3)])

    # -- state ---------------------------------------------------------------------------------
    def is_busy(self) -> bool:
        return self.job is not None and self.job.is_running()

    def _set_busy(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.open_button.setEnabled(not busy and self.output_dir is not None and self.output_dir.is_dir())
        (self.plots.start if busy else self.plots.stop)()
        self.busy_changed.emit(busy)

    # -- starting and stopping ----------------------------------------------------------------------
    def run(self) -> JobHandle | None:
        """Ask the run source for a recipe and start it; a problem becomes a dialog."""
        if self.is_busy() or self.run_source is None:
            return None
        try:
            recipe, output_dir, device = self.run_source()
            from core.engine.runner import (  # imports torch: the environment probe already did
                check_runnable,
                run_inputs,
            )
            from core.io.output_rules import check_output_place

            check_runnable(recipe, device)
            check_output_place(output_dir, run_inputs(recipe))  # before its parent folder is created
            Path(output_dir).parent.mkdir(parents=True, exist_ok=True)
        except Exception as exc:
            show_error(exc, self.window(), "Starting the run")
            return None
        return self.start(recipe, Path(output_dir), device)

    def resume(self) -> JobHandle | None:
        """Start the cancelled run again with the same recipe and output folder, from its checkpoint."""
        if self.is_busy() or self._last_run is None:
            return None
        recipe, output_dir, device = self._last_run
        return self.start(recipe, output_dir, device, resume=True)

    def can_resume(self) -> bool:
        """Whether the last run was cancelled after writing a training checkpoint."""
        return not self.is_busy() and self._checkpoint_left()

    def _checkpoint_left(self) -> bool:
        if self._last_run is None:
            return False
        from core.engine.runner import has_resumable_checkpoint

        recipe, output_dir, _device = self._last_run
        return not output_dir.exists() and has_resumable_checkpoint(recipe, output_dir)

    def start(self, recipe: Any, output_dir: Path, device: str, resume: bool = False) -> JobHandle:
        """Run ``recipe`` into ``output_dir`` in the background (``resume``: from the last checkpoint)."""
        from gui.jobs import run_pipeline

        if not resume and self._checkpoint_left():  # starting over: the cancelled run's checkpoint is not needed
            from core.engine.runner import discard_checkpoints

            discard_checkpoints(*self._last_run[:2])
        self._last_run = (recipe, output_dir, device)
        self.resume_button.hide()
        self.output_dir, self.report = output_dir, None
        self._started = time.monotonic()
        steps = len(recipe.enabled_steps())
        self.plots.reset(steps, trains=trains(recipe))
        self.log.clear()
        self.summary.setText("Running… The before/after numbers appear here when the run is done.")
        self.result_table.show_report(None)
        self.progress.start(steps, self._plan(recipe))
        verb = "Resuming" if resume else "Running"
        self.status.setText(f"{verb} '{recipe.name}' on {device}; the result goes to {output_dir}.")
        self.job = start_job(lambda: run_pipeline(recipe, str(output_dir), device, resume), on_event=self.on_event,
                             on_finished=self._on_finished, on_errored=self._on_errored,
                             on_cancelled=self._on_cancelled, on_done=lambda: self._set_busy(False),
                             settle_s=FIRST_PAINT_S)
        self._set_busy(True)
        return self.job

    def _plan(self, recipe: Any) -> tuple[list[Phase], bool]:
        """The run's phases, with the pre-flight estimate's seconds when it describes this pipeline."""
        steps = len(recipe.enabled_steps())
        try:
            estimate = self.estimate_source() if self.estimate_source is not None else None
            seconds = getattr(estimate, "phase_seconds", None)
            names = []
            for _, step in recipe.enabled_steps():
                names.append((step.technique, getattr(get_technique(step.technique), "title", "")))
            return plan_phases(names, seconds, getattr(estimate, "measure_parts", None))
        except Exception:  # the plan only shapes the progress bar: it must never stop a run
            return plan_phases(steps)

    def cancel(self) -> None:
        """Stop the run at the next safe point (Esc, the Cancel button, the Run menu).

        After :data:`ASK_AFTER_S` of running it asks first and does nothing on "Keep running".
        """
        if not self.is_busy():
            return
        elapsed = time.monotonic() - self._started if self._started is not None else 0.0
        if elapsed > ASK_AFTER_S:
            training = self._last_run is not None and trains(self._last_run[0])
            checkpoint = False
            if training:
                from core.engine.runner import has_resumable_checkpoint

                checkpoint = has_resumable_checkpoint(*self._last_run[:2])
            if not confirm_stop(self.window(), elapsed, checkpoint, training):
                return
        if self.is_busy():  # (it may have ended while the question was open)
            self.job.cancel()
            self.status.setText("Cancelling at the next safe point…")
            self.cancel_button.setEnabled(False)

    # -- events ------------------------------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        from core.events import LayerStat, Log, Metric, Progress, RunDone, StageStarted, StepDone

        self.plots.add_event(event)
        if isinstance(event, Progress):
            self.progress.progress(event)
        elif isinstance(event, StageStarted):
            self.progress.stage_started(event)
        elif isinstance(event, StepDone):
            self.log.appendPlainText(f"Step {event.step_index + 1} done: {event.report.get('summary', '')}")
        elif isinstance(event, Log):
            prefix = "" if event.level == "info" else f"{event.level.upper()}: "
            self.log.appendPlainText(prefix + event.message)
        elif isinstance(event, Metric) and not event.name.startswith("loss"):
            self.log.appendPlainText(f"  {event.name} = {_metric_text(event)}")
        elif isinstance(event, RunDone):
            self.report = event.report
        elif isinstance(event, LayerStat):
            return

    def _finish(self, text: str) -> None:
        self.progress.end("Stopped")
        self.status.setText(text)

    def _on_finished(self, report: dict) -> None:
        self.report = report
        elapsed = format_duration(time.monotonic() - (self._started or 0.0))
        self.progress.finish(f"Done in {elapsed}", "Finished")
        self.status.setText(f"Done in {elapsed}. The compressed model is in {self.output_dir}.")
        self._show_result(report)
        self.plots.redraw()
        self.run_finished.emit(report)

    def _on_errored(self, exc: BaseException) -> None:
        self._finish(f"The run failed: {exc}. Nothing was written.")
        self.summary.setText("No result: the run failed.")
        self.log.appendPlainText(f"ERROR: {type(exc).__name__}: {exc}")
        show_error(exc, self.window(), "Running the pipeline")

    def _on_cancelled(self) -> None:
        if self.output_dir is not None and self.output_dir.exists():  # it finished just before the cancel
            self._finish(f"The run had already finished when Cancel arrived; its result is in {self.output_dir}.")
            if self.report:
                self._show_result(self.report)
            return
        self._finish("Cancelled — nothing was written.")
        self.progress.stage_label.setText("Cancelled")
        self.log.appendPlainText("Cancelled by you. No output folder was created.")
        if self._checkpoint_left():  # (the job is still winding down: not can_resume yet)
            self.resume_button.show()
            self.summary.setText("Cancelled — nothing was written. The training had reached a checkpoint: press "
                                 "<b>Resume training</b> to continue from it, or Run to start over.")
            self.log.appendPlainText("A training checkpoint was kept: Resume training continues from it.")
        else:
            self.summary.setText("Cancelled — nothing was written. Press Run to start again.")

    def _show_result(self, report: dict) -> None:
        self.result_table.show_report(report)
        verdict = self.result_table.verdict
        # the verdict in full width above the table: the table's own row is narrow at 1024 px
        self.summary.setText(summary_header(report, str(self.output_dir))
                             + (f"<br>{verdict_html(verdict)}" if verdict is not None else ""))
        self.summary.setToolTip(verdict.tooltip if verdict is not None else "")
        self._make_room_for_result()

    def open_output(self) -> None:
        if self.output_dir is not None and self.output_dir.is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.output_dir)))
