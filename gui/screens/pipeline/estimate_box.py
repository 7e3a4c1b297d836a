"""The pre-flight estimate shown under the pipeline: output size, peak memory, rough time."""

from __future__ import annotations

from html import escape
from typing import Any

from PySide6.QtWidgets import QGroupBox, QVBoxLayout, QWidget

from gui.screens.pipeline.estimate import estimate
from gui.widgets.formatting import format_bytes, format_duration, short_count
from gui.widgets.labels import rich_label

RED = "#d32f2f"


class EstimateBox(QGroupBox):
    def __init__(self, parent: QWidget | None = None):
        super().__init__("Pre-flight estimate", parent)
        self.setToolTip("Worked out from the loaded model and the settings above before anything runs: sizes "
                        "from what each step stores, times from one forward pass of the model timed on this "
                        "machine when it loaded (bench/bench_estimates.py compares them with real runs).")
        self.label = rich_label("Load a model on the Model page to see an estimate.", selectable=False, top_left=True)
        QVBoxLayout(self).addWidget(self.label)
        self.last: Any = None
        self.fits = True

    def show_estimate(self, summary: Any, recipe: Any, device: str, available: int | None,
                      task_seconds: float | None = None) -> None:
        """Show the estimate; ``task_seconds``: what scoring the zero-shot tasks adds (both models), if any."""
        if summary is None:
            self.last, self.fits = None, True
            self.label.setText("Load a model on the Model page to see an estimate.")
            return
        if not recipe.enabled_steps():
            self.last, self.fits = None, True
            self.label.setText("Add a step from the techniques on the left to see an estimate.")
            return
        est = self.last = estimate(summary, recipe, device, available)
        self.fits = est.fits
        source = summary.bytes_on_disk
        after = (f"{short_count(est.output_parameters)} after" if est.output_parameters != est.parameters
                 else "the same count after")
        if est.output_nonzero and est.output_nonzero < est.output_parameters * 0.99:
            after += f", about {short_count(est.output_nonzero)} of them non-zero (zeros still count as parameters)"
        rows = [
            ("Parameters", f"{short_count(est.parameters)} now, {after}"),
            ("Output size", f"about {format_bytes(est.output_bytes)} as safetensors ({escape(est.output_dtype or summary.dtype)})"
                            + (f"; the source file is {format_bytes(source)}" if source else "")),
            ("Peak memory", f"about {format_bytes(est.peak_bytes)}"
                            + (f" of {format_bytes(available)} free on {escape(device)}" if available else "")),
            ("Time", time_text(est, device, task_seconds)),
        ]
        html = "".join(f"<p style='margin:1px 0'><b>{name}:</b> {value}</p>" for name, value in rows)
        for note in dict.fromkeys(est.notes):
            html += f"<p style='margin:4px 0 0 0'><i>{escape(note)}</i></p>"
        if not est.fits:
            html += (f"<p style='color:{RED}; margin:4px 0'><b>⚠ This run will probably not fit:</b> it needs "
                     f"about {format_bytes(est.peak_bytes)} but only {format_bytes(available)} is free. Close "
                     "other programs, use fewer calibration windows or a shorter sequence length, switch off "
                     "'KL to teacher', or choose a device with more memory.</p>")
        self.label.setText(html)


def time_text(est: Any, device: str, task_seconds: float | None = None) -> str:
    """"about 3 min on cpu; the step about 4 s, measuring the original and the result about 2 min, …"."""
    total = est.seconds + (task_seconds or 0)
    steps = est.step_seconds()
    count = sum(1 for name, _ in est.phase_seconds if name.startswith("step "))
    step_time = "under a second" if steps < 1 else f"about {format_duration(steps)}"
    parts = [f"{'the step' if count == 1 else f'the {count} steps'} {step_time}"]
    measuring = est.measure_seconds()
    original = dict(est.phase_seconds).get("measure original")
    if measuring:
        what = "measuring the result" if original == 0 else "measuring the original and the result"
        parts.append(f"{what} about {format_duration(measuring)}")
    if original == 0 and measuring:
        parts.append("the original's measurements are reused from an earlier run")
    tasks = f", of which about {format_duration(task_seconds)} scoring the tasks" if task_seconds else ""
    basis = "" if est.timed else " (no forward pass timed here yet: a rough guess)"
    return f"about {format_duration(total)} on {escape(device)}{basis}{tasks}; {', '.join(parts)}"
