"""Numbers of the selected runs side by side.

One run selected: its numbers before and after compression.  Two runs: the results of both, and
how the second differs from the first (a ratio for sizes and speeds, a difference for quality).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from core.eval.compare import KL_EXPLANATION
from gui.screens.history.style import duration, format_metric, local_time, short_source, status_text

# (label, metric base name, how to compare two runs: "ratio" or "diff")
ROWS = (
    ("Size on disk", "bytes_on_disk", "ratio"),
    ("Size in memory", "bytes_in_memory", "ratio"),
    ("Parameters", "parameters", "ratio"),
    ("Non-zero parameters", "nonzero_parameters", "ratio"),
    ("Perplexity", "perplexity", "diff"),
    ("Accuracy", "accuracy", "diff"),
    ("Macro F1", "macro_f1", "diff"),
    ("Average task accuracy", "task_accuracy", "diff"),
    ("Decode speed", "decode_tokens_per_s", "ratio"),
)
SINGLE_ROWS = (("KL to the original", "kl_to_teacher", "diff"), ("Top-1 agreement", "top1_agreement", "diff"))
EXPLAIN = {
    "Size on disk": "Bytes of the weight files (before: the source as stored; after: the saved folder).",
    "Perplexity": "How surprised the model is by the evaluation text: lower is better.",
    "KL to the original": KL_EXPLANATION,
    "Top-1 agreement": "How often both models predict the same next token.",
    "Average task accuracy": "The average of the headline accuracies of the zero-shot tasks the run scored "
                             "(multiple-choice questions scored as lm-eval scores them): higher is better. "
                             "Averages of different tasks, or of different numbers of questions, differ.",
}


def _item(text: str, tooltip: str = "") -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    item.setToolTip(tooltip or text)  # the whole text, where the cell is too narrow for it
    return item


def _change(kind: str, key: str, a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "—"
    if kind == "ratio":
        return f"× {b / a:.3g}" if a else "—"
    delta = b - a
    if key.startswith(("accuracy", "macro_f1", "top1", "task_accuracy")):
        return f"{delta * 100:+.1f} points"
    return f"{delta:+.4g}"


class RunComparison(QTableWidget):
    """A read-only table: one run's before/after, or two runs' results side by side."""

    def __init__(self, parent=None):
        super().__init__(0, 3, parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setToolTip("Select one run to see its numbers before and after; select two (Ctrl+click) to put "
                        "them side by side with the change from the first to the second.")
        self.show_runs([])

    def _fill(self, headers: list[str], rows: list[tuple[str, list[str], str]]) -> None:
        self.clear()
        self.setColumnCount(len(headers))
        self.setHorizontalHeaderLabels(headers)
        header = self.horizontalHeader()
        for column in range(len(headers)):  # the change column only as wide as its numbers
            narrow = len(headers) == 3 and column == 2
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents if narrow
                                        else QHeaderView.ResizeMode.Stretch)
        self.setRowCount(len(rows))
        self.setVerticalHeaderLabels([label for label, _, _ in rows])
        for row, (label, cells, tooltip) in enumerate(rows):
            self.verticalHeaderItem(row).setToolTip(tooltip or EXPLAIN.get(label, ""))
            for column, text in enumerate(cells):
                explain = tooltip or EXPLAIN.get(label, "")
                self.setItem(row, column, _item(text, f"{text}\n\n{explain}" if text and explain else explain))

    def show_runs(self, records: list[Any]) -> None:
        if not records:
            self._fill(["Select a run"], [("", ["Select one run in the table, or two to compare them."], "")])
            return
        if len(records) == 1:
            self._show_one(records[0])
        else:
            self._show_two(records[0], records[1])

    def _show_one(self, r: Any) -> None:
        rows = [("Run", [f"#{r.id} {r.recipe_name}", ""], ""),
                ("Status", [status_text(r.status)[0], r.message], r.message),
                ("Model", [short_source(r.source), ""], r.source)]
        for label, key, _kind in ROWS:
            before, after = r.metric(f"{key}_before"), r.metric(f"{key}_after")
            if before is not None or after is not None:
                rows.append((label, [format_metric(key, before), format_metric(key, after)], ""))
        for label, key, _kind in SINGLE_ROWS:
            if r.metric(key) is not None:
                rows.append((label, ["", format_metric(key, r.metric(key))], ""))
        rows.append(("Time", ["", duration(r)], "From the start of the run to its end."))
        rows.append(("Output", ["", r.output], r.output))
        self._fill(["Before", "After"], rows)

    def _show_two(self, a: Any, b: Any) -> None:
        rows = [("Recipe", [a.recipe_name, b.recipe_name, ""], ""),
                ("Status", [status_text(a.status)[0], status_text(b.status)[0], ""], ""),
                ("Model", [short_source(a.source), short_source(b.source), ""], f"{a.source}\n{b.source}"),
                ("Steps", [", ".join(a.metrics.get("steps", [])) or "—", ", ".join(b.metrics.get("steps", [])) or "—",
                           ""], ""),
                ("Started", [local_time(a.started), local_time(b.started), ""], "")]
        for label, key, kind in ROWS + SINGLE_ROWS:
            name = key if (label, key, kind) in SINGLE_ROWS else f"{key}_after"
            va, vb = a.metric(name), b.metric(name)
            if va is not None or vb is not None:
                rows.append((label, [format_metric(key, va), format_metric(key, vb), _change(kind, key, va, vb)], ""))
        rows.append(("Time", [duration(a), duration(b), ""], ""))
        self._fill([f"Run #{a.id}", f"Run #{b.id}", f"#{b.id} vs #{a.id}"], rows)
