"""The Compare page's per-class section for classifiers: precision, recall and F1 of each class for the
teacher and the student side by side, a sentence on the classes that got worse, and both confusion
matrices.  Shown only when the result was scored on labelled data; the numbers come from
:func:`core.eval.class_compare.class_comparison`, this widget only lays them out.
"""

from __future__ import annotations

from html import escape
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QBoxLayout, QGroupBox, QTableWidgetItem, QVBoxLayout, QWidget

from core.eval.class_compare import WORSE_F1, ClassComparison, class_comparison
from gui.widgets.labels import rich_label
from gui.widgets.tables import ReadOnlyTable

WORSE_COLOUR = "#b35900"
SIDE_BY_SIDE_MIN_WIDTH = 1100  # px of the section below which the confusion matrices stack
TIPS = {
    "precision": "Of the texts the model put in this class, the share that truly belong to it.",
    "recall": "Of the texts that truly belong to this class, the share the model found.",
    "F1": "The balance of precision and recall (their harmonic mean); 1 is perfect.",
}


def _headers(teacher: str) -> list[str]:
    """Two-line headers: the number columns stay narrow, so class names have room in a small window."""
    return ["Class", "Test\nexamples", f"{teacher}\nprecision", f"{teacher}\nrecall", f"{teacher}\nF1",
            "Student\nprecision", "Student\nrecall", "Student\nF1", "F1\nchange"]


def _fit_height(table: ReadOnlyTable) -> None:
    """Exactly as tall as its rows: the page scrolls instead of hiding rows."""
    table.resizeRowsToContents()
    rows = sum(table.rowHeight(r) for r in range(table.rowCount()))
    table.setFixedHeight(table.horizontalHeader().sizeHint().height() + rows + 2 * table.frameWidth()
                         + table.horizontalScrollBar().sizeHint().height())


def _item(text: str, tip: str, numeric: bool = True) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setToolTip(tip)
    if numeric:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


class ConfusionTable(ReadOnlyTable):
    """Rows: the true class; columns: the class predicted; cells: how many test texts."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(["True class"], stretch_column=0, parent=parent)

    def show_matrix(self, names: list[str], matrix: list[list[int]] | None, who: str) -> None:
        self.setColumnCount(len(names) + 1)
        self.setHorizontalHeaderLabels(["True ↓ / predicted →", *names])
        self.setRowCount(len(names) if matrix else 0)
        for t, name in enumerate(names if matrix else []):
            self.setItem(t, 0, _item(name, f"Test texts whose true class is {name}.", numeric=False))
            for p, predicted in enumerate(names):
                count = matrix[t][p]
                item = _item(str(count), f"{count} test texts of class {name} that the {who} called {predicted}.")
                if t == p:
                    item.setBackground(QColor("#e3f0e3"))
                self.setItem(t, p + 1, item)
        _fit_height(self)


class ClassSection(QGroupBox):
    """Per-class scores of teacher and student; hidden when the run is not a classifier's."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Each class: teacher and student", parent)
        self.setToolTip("Accuracy can hide a class the student gets wrong; this table shows every class.")
        self.comparison: ClassComparison | None = None
        self.sentence = rich_label("")
        self.about = rich_label("")
        self.table = ReadOnlyTable(_headers("Teacher"), stretch_column=0)
        self.teacher_title = rich_label("")
        self.student_title = rich_label("<b>Student</b>: which class each test text was given")
        self.teacher_confusion = ConfusionTable()
        self.student_confusion = ConfusionTable()
        self.matrices = matrices = QBoxLayout(QBoxLayout.Direction.LeftToRight)
        for title, table in ((self.teacher_title, self.teacher_confusion),
                             (self.student_title, self.student_confusion)):
            column = QVBoxLayout()
            column.addWidget(title)
            column.addWidget(table)
            matrices.addLayout(column)
        layout = QVBoxLayout(self)
        layout.addWidget(self.sentence)
        layout.addWidget(self.table)
        layout.addWidget(self.about)
        layout.addLayout(matrices)
        self.hide()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """The two confusion matrices side by side in a wide window, one above the other in a narrow one
        (side by side at 1024 px, a five-class matrix hid its last columns behind a scroll bar)."""
        wide = event.size().width() >= SIDE_BY_SIDE_MIN_WIDTH
        self.matrices.setDirection(QBoxLayout.Direction.LeftToRight if wide else QBoxLayout.Direction.TopToBottom)
        super().resizeEvent(event)

    def show_report(self, report: dict[str, Any] | None) -> None:
        self.comparison = comparison = class_comparison(report)
        self.setVisible(comparison is not None)
        if comparison is None:
            return
        teacher = comparison.teacher_title
        worse = comparison.worse()
        colour = WORSE_COLOUR if worse else "#2e7d32"
        self.sentence.setText(f"<span style='color:{colour}'>{escape(comparison.sentence())}</span>")
        self.about.setText(f"{escape(teacher)}: {escape(comparison.teacher_about)}. Student: the saved result. "
                           f"A change of F1 below −{WORSE_F1:.2f} is marked.")
        headers = _headers(teacher)
        self.table.setHorizontalHeaderLabels(headers)
        for column, name in enumerate(headers):
            key = name.split()[-1]
            self.table.horizontalHeaderItem(column).setToolTip(TIPS.get(key, TIPS.get(key.lower(), name)))
        self.table.setRowCount(len(comparison.rows))
        for index, row in enumerate(comparison.rows):
            cells = [_item(row.name, f"Class {row.name}", numeric=False),
                     _item(f"{row.support:,}", "How many test texts truly belong to this class.")]
            for side, who in ((row.teacher, teacher.lower()), (row.student, "student")):
                for key, word in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
                    value = side.get(key) if side else None
                    cells.append(_item("—" if value is None else f"{value:.3f}", f"The {who}'s {word}: {TIPS[word]}"))
            change = row.f1_change
            cells.append(_item("—" if change is None else f"{change:+.3f}".replace("-", "−"), "Student F1 minus the "
                               f"{teacher.lower()}'s; below −{WORSE_F1:.2f} counts as worse."))
            if change is not None and change < -WORSE_F1:
                for cell in (cells[0], cells[-1]):
                    cell.setForeground(QColor(WORSE_COLOUR))
            for column, cell in enumerate(cells):
                self.table.setItem(index, column, cell)
        _fit_height(self.table)
        self.teacher_title.setText(f"<b>{escape(teacher)}</b>: which class each test text was given")
        self.teacher_title.setVisible(comparison.teacher_confusion is not None)
        self.teacher_confusion.setVisible(comparison.teacher_confusion is not None)
        self.teacher_confusion.show_matrix(comparison.names, comparison.teacher_confusion, teacher.lower())
        self.student_confusion.show_matrix(comparison.names, comparison.student_confusion, "student")
