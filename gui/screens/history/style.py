"""What the History page shows for a run: status words and colours, quality measures, numbers.

No widgets here: plain functions the table, the plot and the comparison share.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from core.eval.size_baseline import OriginalSize, original_size_of_metrics
from gui.widgets.formatting import format_bytes, format_duration, short_count

STATUS_WORDS = {
    "running": ("Running", "#1f77b4", "This run is going on now (in this window or another program)."),
    "done": ("Done", "#2ca02c", "Finished; the compressed model was saved to the output folder."),
    "failed": ("Failed", "#d62728", "Stopped by an error; nothing was written. Hover for the message."),
    "cancelled": ("Cancelled", "#8c8c8c", "Cancelled before the end; nothing was written."),
    "interrupted": ("Interrupted", "#e67e22", "The program stopped mid-run (closed, killed or crashed); "
                    "no output was left behind."),
}


@dataclass(frozen=True)
class Quality:
    """A quality measure a run may have, and which direction is better."""

    key: str
    label: str
    higher_is_better: bool

    @property
    def axis(self) -> str:
        return f"{self.label} ({'higher' if self.higher_is_better else 'lower'} is better)"

    @property
    def before_key(self) -> str | None:
        """The same measure of the original, measured before the run ('perplexity_before'); None for a measure
        of the result against the original (KL), which is 0 for the original by definition."""
        return self.key.removesuffix("_after") + "_before" if self.key.endswith("_after") else None


QUALITIES = (
    Quality("perplexity_after", "Perplexity", False),
    Quality("accuracy_after", "Accuracy", True),
    Quality("macro_f1_after", "Macro F1", True),
    Quality("task_accuracy_after", "Average task accuracy", True),
    Quality("kl_to_teacher", "KL to the original", False),
)
SIZE_KEY = "bytes_on_disk_after"


def status_text(status: str) -> tuple[str, str, str]:
    """(words, colour, explanation) for a status."""
    return STATUS_WORDS.get(status, (status.title(), "#8c8c8c", ""))


def local_time(iso: str | None) -> str:
    """'2025-01-31 14:05' in the local time zone ('—' when missing)."""
    if not iso:
        return "—"
    try:
        return dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def duration(record: Any) -> str:
    seconds = record.metrics.get("seconds")
    if seconds is None and record.finished:
        try:
            seconds = (dt.datetime.fromisoformat(record.finished) - dt.datetime.fromisoformat(record.started)).total_seconds()
        except ValueError:
            seconds = None
    return format_duration(seconds)


def format_metric(key: str, value: float | None) -> str:
    """A stored number as people read it, by what it measures."""
    if value is None:
        return "—"
    if key.startswith("bytes"):
        return format_bytes(value)
    if "parameters" in key:
        return short_count(int(value))
    if key.startswith(("accuracy", "macro_f1", "top1", "task_accuracy")):
        return f"{value:.1%}"
    if key.startswith("decode"):
        return f"{value:.1f} tokens/s"
    if key == "seconds":
        return format_duration(value)
    return f"{value:.4g}"


def quality_note(record: Any, quality: Quality) -> str:
    """What a run's quality number covers, where that varies between runs ('' otherwise)."""
    tasks = record.metrics.get("tasks")
    if quality.key.startswith("task_accuracy") and isinstance(tasks, list) and tasks:
        return f"Average of the headline accuracy of {len(tasks)} task(s): {', '.join(map(str, tasks))}."
    return ""


def best_quality(records: list[Any]) -> Quality:
    """The measure most finished runs have (perplexity for language models, accuracy for classifiers)."""
    counts = [(sum(r.metric(q.key) is not None for r in records), -i, q) for i, q in enumerate(QUALITIES)]
    return max(counts, key=lambda c: (c[0], c[1]))[2]


def short_source(source: str) -> str:
    """A model source as a short name: the last part of a path or hub id."""
    text = source.rstrip("/\\")
    return text.rsplit("/", 1)[-1].rsplit("\\", 1)[-1] or source


def original_quality(record: Any, quality: Quality) -> float | None:
    """The original's ``quality`` as measured before ``record``'s run (its 'before' numbers); for KL to the
    original, 0 (the original against itself) when the run measured KL; None when not measured."""
    if quality.before_key is None:
        return 0.0 if record.metric(quality.key) is not None else None
    return record.metric(quality.before_key)


def original_size(record: Any) -> OriginalSize:
    """The original's sizes as measured before ``record``'s run (what its result's size is compared with)."""
    return original_size_of_metrics(record.metrics)


def original_size_words(size: OriginalSize) -> str:
    """'269.0 MB as a 16-bit model, the format results are saved in; its file is 4-bit GGUF Q4_1, 98.4 MB' or
    '98.4 MB on disk'."""
    compared = size.compared()
    if compared is None:
        return "size not measured"
    if size.compact_gguf:
        return (f"{format_bytes(compared)} as a 16-bit model, the format results are saved in; its file is "
                f"{size.stored_format}, {format_bytes(size.stored)}")
    return f"{format_bytes(compared)} on disk"
