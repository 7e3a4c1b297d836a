"""The table shown when a run is done: each measured number before and after, and what it measures."""

from __future__ import annotations

from html import escape
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QTableWidgetItem, QWidget

from core.eval.compare import KL_EXPLANATION
from core.eval.verdict import Verdict, report_verdict
from gui.widgets.formatting import format_bytes, format_count
from gui.widgets.tables import ReadOnlyTable
from gui.widgets.verdict import level_colour

VERDICT_MEASURE = "Quality verdict"


def _ppl(part: dict) -> str:
    value = (part.get("perplexity") or {}).get("perplexity")
    return "—" if value is None else f"{value:.3f}"


def _nonzero(part: dict) -> str:
    params, nonzero = part.get("parameters"), part.get("nonzero_parameters")
    if not params or nonzero is None:
        return "—"
    return f"{format_count(nonzero)} ({1 - nonzero / params:.1%} zeros)"


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(measure, before, after, what it measures in short, the longer explanation) for a run report."""
    before, after = report.get("before", {}), report.get("after", {})
    rows = [
        ("Perplexity", _ppl(before), _ppl(after), "On the evaluation text; lower is better.",
         "How surprised the model is by the held-out evaluation text (the same text before and after)."),
        ("Parameters", format_count(before.get("parameters")), format_count(after.get("parameters")),
         "All weights, zeros included.", "Every weight of the model; shared weights are counted once."),
        ("Non-zero parameters", _nonzero(before), _nonzero(after), "Weights not exactly zero.",
         "Pruning raises the share of zeros; a dense file does not get smaller from that alone."),
        ("Size on disk", format_bytes(before.get("bytes_on_disk")), format_bytes(after.get("bytes_on_disk")),
         "Weight files: the source, then the saved folder.",
         f"Before: {before.get('on_disk_is', 'the source weights')}. After: "
         f"{after.get('on_disk_is', 'the saved weight files')}."),
        ("Size in memory", format_bytes(before.get("bytes_in_memory")), format_bytes(after.get("bytes_in_memory")),
         "Weights in RAM or GPU memory.", "Bytes the weights take once loaded, in the number format they are stored in."),
    ]
    for key, label in (("accuracy", "Accuracy"), ("macro_f1", "Macro F1")):
        b, a = (before.get("classification") or {}).get(key), (after.get("classification") or {}).get(key)
        if b is not None or a is not None:
            rows.append((label, "—" if b is None else f"{b:.3f}", "—" if a is None else f"{a:.3f}",
                         "Labelled test split; higher is better.", "Measured on the held-out part of the labelled data."))
    kl = (report.get("comparison") or {}).get("kl_per_token")
    if kl is not None:
        rows.append(("KL to original", "0", f"{kl:.4f}", "Drift from the original; 0 = same.",
                     KL_EXPLANATION))
    return rows


def summary_header(report: dict[str, Any], output_dir: str) -> str:
    seconds = report.get("seconds")
    took = f" in {seconds:.0f} s" if isinstance(seconds, int | float) else ""
    return f"<b>Done{took}.</b> Saved to {escape(output_dir)}"


def verdict_row(verdict: Verdict) -> tuple[str, str, str, str, str]:
    """The table's first row: the verdict word under 'After', the reason beside it, the thresholds as tooltip."""
    return (VERDICT_MEASURE, "", verdict.level, verdict.reason, verdict.tooltip)


class ResultTable(ReadOnlyTable):
    """Measure | Before | After | What it measures: first the quality verdict (plain words), then one row per
    measured number."""

    HEADERS = ("Measure", "Before", "After", "What it measures")

    def __init__(self, parent: QWidget | None = None):
        super().__init__(self.HEADERS, stretch_column=3, parent=parent)
        self.verdict: Verdict | None = None
        self.setToolTip("The same measurements before and after the run, under a plain verdict on the quality. "
                        "Hover over a row for what it measures, or over the verdict for how it is decided.")

    def show_report(self, report: dict[str, Any] | None) -> None:
        self.verdict = report_verdict(report) if report else None
        rows = [verdict_row(self.verdict), *summary_rows(report)] if report else []
        self.setVisible(bool(rows))
        self.setRowCount(len(rows))
        for row, values in enumerate(rows):
            for column, text in enumerate(values[:4]):
                item = QTableWidgetItem(text)
                item.setToolTip(values[4])
                if column in (1, 2):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if values[0] == VERDICT_MEASURE and column in (0, 2):
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                    if column == 2:
                        item.setForeground(QBrush(QColor(level_colour(self.verdict))))
                self.setItem(row, column, item)
        self.resizeRowsToContents()

    def text_at(self, measure: str, column: int) -> str:
        """The text in ``column`` of the row called ``measure`` (for tests and screenshots)."""
        for row in range(self.rowCount()):
            if self.item(row, 0).text() == measure:
                return self.item(row, column).text()
        raise KeyError(measure)

    NARROW_PX = 640  # below this the explanations (also every row's tooltip) are left out: numbers first

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self.setColumnHidden(3, self.width() < self.NARROW_PX)
        self.resizeRowsToContents()  # re-wrap the explanations to the new width
