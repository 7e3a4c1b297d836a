"""The Model page: pick a source, load it in the background, see its summary and layers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from gui.errors import show_error
from gui.screens.model.layer_table import LayerTableView
from gui.screens.model.source_picker import SourcePicker
from gui.screens.model.summary import ModelSummaryBox
from gui.widgets.formatting import device_label, format_duration
from gui.widgets.labels import heading
from gui.widgets.techniques_view import TechniquesBox
from gui.worker import JobHandle, start_job

TASKS = (("Text generation", "causal-lm", "A model that continues text (chat, completion): most LLMs."),
         ("Classification", "sequence-classification",
          "A model that puts a text into one of a few classes (e.g. positive / negative)."))


class ModelPanel(QWidget):
    """Choose a source and load it; ``model_loaded`` after a load that worked, ``load_failed`` (one plain
    line) after one that did not. ``load_error`` is that line until a model loads again."""

    model_loaded = Signal(object)  # gui.jobs.LoadResult
    load_failed = Signal(str)
    busy_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.result: Any = None  # the last LoadResult
        self.load_error: str | None = None  # set by a failed load, cleared by one that works
        self.job: JobHandle | None = None
        self.job_source = ""  # the source the job in progress (or the last one) loads
        self._started_at = 0.0
        self._stage_text = ""
        self._elapsed_timer = QTimer(self, interval=1000, timeout=self._show_status)

        self.picker = SourcePicker(task=lambda: self.task())
        self.picker.activated.connect(self.load)
        self.task_box = QComboBox()
        for label, task, tooltip in TASKS:
            self.task_box.addItem(label, task)
            self.task_box.setItemData(self.task_box.count() - 1, tooltip, Qt.ItemDataRole.ToolTipRole)
        self.task_box.setToolTip("What the model does: Text generation for chat and completion models, "
                                 "Classification for models that label a text.")
        self.device_box = QComboBox()
        self.device_box.addItem("CPU (looking for GPUs…)", "cpu")
        self.device_box.setMinimumContentsLength(28)
        self.device_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.device_box.setToolTip("Where the model is loaded and later compressed: the CPU or a GPU. "
                                   "The free memory shown must hold the model.")
        self.device_box.currentIndexChanged.connect(self._refresh_techniques)
        self.task_box.currentIndexChanged.connect(self._refresh_techniques)
        self.load_button = QPushButton("Load")
        self.load_button.setDefault(True)
        self.load_button.setToolTip("Load the chosen model and measure it. Loading runs in the background; "
                                    "the window stays usable.")
        self.load_button.clicked.connect(self.load)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop loading. The model loaded before, if any, stays.")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.progress.setToolTip("How far loading has come. A moving bar means the step's length is unknown.")
        self.status = QLabel("Choose a model and press Load.")
        self.status.setWordWrap(True)
        self.status.setToolTip("What the app is doing now, how long it has taken and, when known, how long is left.")

        self.summary_box = ModelSummaryBox()
        self.layer_table = LayerTableView()
        self.techniques_box = TechniquesBox()
        self._build_layout()
        self._set_busy(False)

    def _build_layout(self) -> None:
        source_group = QGroupBox("Source")
        options = QHBoxLayout()
        options.addWidget(QLabel("Task:"))
        options.addWidget(self.task_box)
        options.addSpacing(16)
        options.addWidget(QLabel("Device:"))
        options.addWidget(self.device_box)
        options.addStretch(1)
        options.addWidget(self.load_button)
        options.addWidget(self.cancel_button)
        hint = QLabel("Tip: drop a model folder or a .gguf file anywhere on this window to load it.")
        hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)  # quieter text, from the palette
        status_row = QHBoxLayout()
        status_row.addWidget(self.progress, 1)
        status_row.addWidget(self.status, 2)
        source_layout = QVBoxLayout(source_group)
        source_layout.addWidget(self.picker)
        source_layout.addWidget(hint)
        source_layout.addLayout(options)
        source_layout.addLayout(status_row)

        layers_group = self.layers_group = QGroupBox("Layers")
        layers_group.setToolTip("Every layer that holds weights, in model order. Click a header to sort.")
        QVBoxLayout(layers_group).addWidget(self.layer_table)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.summary_box)
        left_layout.addWidget(self.techniques_box, 1)
        left.setMinimumWidth(self.summary_box.sizeHint().width())
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(layers_group)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([self.summary_box.minimumWidth(), 10_000])
        self.splitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.addWidget(heading("Model"))
        layout.addWidget(QLabel("Choose the model to compress and see what it is made of."))
        layout.addWidget(source_group)
        layout.addWidget(self.splitter, 1)

    # -- state -------------------------------------------------------------------------------
    def source(self) -> str:
        return self.picker.source()

    def set_source(self, source: str) -> None:
        self.picker.set_source(source)

    def task(self) -> str:
        return self.task_box.currentData()

    def set_task(self, task: str) -> None:
        index = self.task_box.findData(task)
        if index >= 0:
            self.task_box.setCurrentIndex(index)

    def device(self) -> str:
        return self.device_box.currentData() or "cpu"

    def is_busy(self) -> bool:
        return self.job is not None and self.job.is_running()

    def _set_busy(self, busy: bool) -> None:
        for widget in (self.picker, self.task_box, self.device_box, self.load_button):
            widget.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if busy:
            self._elapsed_timer.start()
        else:
            self._elapsed_timer.stop()
        self.busy_changed.emit(busy)

    def _show_status(self) -> None:
        elapsed = time.monotonic() - self._started_at
        running = self._elapsed_timer.isActive()
        suffix = f" ({format_duration(elapsed)} so far)" if running and elapsed >= 1 else ""
        self.status.setText(self._stage_text + suffix)

    # -- environment (devices, techniques), found in the background after the window shows ----
    def set_environment(self, environment: Any) -> None:
        previous = self.device()
        self.device_box.clear()
        for device in environment.devices:
            self.device_box.addItem(device_label(device.name, device.free_bytes, device.total_bytes), device.id)
            self.device_box.setItemData(self.device_box.count() - 1, f"{device.id}: {device.name}",
                                        Qt.ItemDataRole.ToolTipRole)
        gpu = next((d.id for d in environment.devices if d.id != "cpu"), None)
        wanted = previous if previous != "cpu" or gpu is None else gpu
        self.device_box.setCurrentIndex(max(0, self.device_box.findData(wanted)))
        self.techniques_box.show_techniques(environment.techniques, self.device(), self.task())

    def _refresh_techniques(self) -> None:
        self.techniques_box.refresh(self.device(), self.task())

    # -- loading ------------------------------------------------------------------------------
    def load(self) -> JobHandle | None:
        """Start loading the chosen model in the background; returns the job (None if busy)."""
        if self.is_busy():
            return None
        from gui.jobs import load_and_inspect

        source, task, device = self.source(), self.task(), self.device()
        if not source:
            self._stage_text = "Type or choose a model first."
            self._show_status()
            return None
        self.job_source = source
        self._started_at = time.monotonic()
        self._stage_text = "Starting…"
        self.progress.setRange(0, 0)  # busy until a Progress event says how far
        self.job = start_job(lambda: load_and_probe(load_and_inspect(source, task, device), source, device),
                             on_event=self._on_event,
                             on_finished=self._on_loaded, on_errored=self._on_error,
                             on_cancelled=self._on_cancelled, on_done=lambda: self._set_busy(False))
        self._set_busy(True)
        self._show_status()
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self._stage_text = "Cancelling after the current step…"
            self._show_status()

    def _on_event(self, event: Any) -> None:
        from core.events import Log, Progress

        if isinstance(event, Progress):
            if event.total:
                self.progress.setRange(0, 1000)
                self.progress.setValue(round(event.fraction * 1000))
                eta = f", about {format_duration(event.eta_s)} left" if event.eta_s is not None else ""
                self._stage_text = f"{event.stage}: {event.fraction:.0%}{eta}"
            else:
                self.progress.setRange(0, 0)
                self._stage_text = event.stage
        elif isinstance(event, Log):
            self._stage_text = event.message
        self._show_status()

    def _finish_progress(self, text: str, full: bool) -> None:
        self._elapsed_timer.stop()
        self.progress.setRange(0, 1000)
        self.progress.setValue(1000 if full else 0)
        self._stage_text = text
        self._show_status()

    def _on_loaded(self, result: Any) -> None:
        self.result = result
        self.load_error = None
        elapsed = time.monotonic() - self._started_at
        device = next(iter(result.loaded.model.parameters())).device
        self._finish_progress(f"Loaded {result.summary.architecture} in {format_duration(elapsed)} on {device}.",
                              True)
        self.summary_box.show_summary(result.summary, result.loaded.kind)
        self.layer_table.set_rows(result.summary.layers)
        self.layers_group.setTitle(f"Layers ({len(result.summary.layers):,} with weights)")
        self.model_loaded.emit(result)

    def _on_error(self, exc: BaseException) -> None:
        """Nothing of the model loaded before stays on screen: runs must not use a source that failed."""
        self._finish_progress(f"Loading failed: {exc}", False)
        source = self.job_source or self.source()
        self.result = None
        self.load_error = (f"No model loaded: loading {Path(source).name or source} failed. "
                           "Fix the source above and press Load.")
        self.summary_box.show_failure(self.load_error)
        self.layer_table.set_rows([])
        self.layers_group.setTitle("Layers")
        self.load_failed.emit(self.load_error)
        show_error(exc, self.window(), "Loading the model")

    def _on_cancelled(self) -> None:
        self._finish_progress("Loading cancelled." + (" The previous model is still loaded." if self.result else ""),
                              False)


def load_and_probe(loading: Any, source: str, device: str) -> Any:
    """The load job, then (still in the worker) one timed forward pass for the Pipeline page's time estimate
    (core.engine.throughput: skipped when this model was timed here before; a failure never fails the load)."""
    result = yield from loading
    try:
        from core.engine.throughput import iter_probe

        yield from iter_probe(result.loaded.model, source, result.summary, device)
    except Exception:  # the estimate falls back to arithmetic
        pass
    return result
