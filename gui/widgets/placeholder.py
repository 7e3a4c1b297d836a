"""Pages of the planned flow that are not built yet: a plain-words note of what will be there."""

from __future__ import annotations

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

PLANNED = {
    "Pipeline": "Choose the compression techniques — quantization, pruning, distillation, low-rank "
                "and layer sharing — switch each on or off and set its parameters. The steps run top "
                "to bottom as a recipe you can save and re-run from the command line.",
    "Run": "Start the pipeline on the chosen device and watch live plots of loss, size and quality "
           "while the model is compressed in the background. You can cancel at any time.",
    "Compare": "Put the original model (the teacher) and the compressed one (the student) side by "
               "side: size three ways, perplexity, speed, and their answers to the same prompts.",
    "History": "Every run is recorded with its recipe, its measured numbers and its output folder, "
               "so you can reopen, compare or repeat it.",
    "Export": "Save the compressed model as a transformers folder (safetensors) or a smaller file "
              "format, together with a report of what was done to it.",
}


class PlaceholderPage(QWidget):
    def __init__(self, title: str, parent: QWidget | None = None):
        super().__init__(parent)
        heading = QLabel(title)
        font = heading.font()
        font.setPointSizeF(font.pointSizeF() * 1.5)
        font.setBold(True)
        heading.setFont(font)
        self.text = QLabel(PLANNED[title])
        note = QLabel("This step is planned and not built yet. Start with the Model step on the left.")
        note.setForegroundRole(QPalette.ColorRole.PlaceholderText)  # quieter, from the palette's colours
        column = QWidget()  # a readable line length; labels without alignment flags wrap correctly
        column.setMaximumWidth(680)
        column_layout = QVBoxLayout(column)
        column_layout.setContentsMargins(0, 0, 0, 0)
        column_layout.setSpacing(12)
        for widget in (heading, self.text, note):
            widget.setWordWrap(True)
            column_layout.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.addWidget(column)
        layout.addStretch(1)
