"""Choose a data source: one of the bundled sample datasets (by description) or your own file."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QPushButton, QWidget

from core.data.samples import BUNDLED_DATASETS

FILE_FILTER = "Text or tables (*.txt *.jsonl *.json *.csv *.parquet);;All files (*)"


class DataChoice(QWidget):
    """A drop-down of bundled datasets of one ``kind`` ("text" or "labelled") plus chosen files."""

    changed = Signal(str)

    def __init__(self, kind: str, tooltip: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.box = QComboBox()
        self.box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.box.setMinimumContentsLength(16)
        for name, dataset in BUNDLED_DATASETS.items():
            if dataset.kind == kind:
                self.box.addItem(f"Sample: {name} — {dataset.description}", f"bundled:{name}")
                self.box.setItemData(self.box.count() - 1, dataset.description, 3)  # ToolTipRole
        self.box.setToolTip(tooltip)
        self.box.currentIndexChanged.connect(lambda _i: self.changed.emit(self.value()))
        self.button = QPushButton("Choose file…")
        self.button.setToolTip("Use your own .txt, .jsonl, .csv or .parquet file instead of a bundled sample.")
        self.button.clicked.connect(self.choose_file)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.box, 1)
        layout.addWidget(self.button)

    def value(self) -> str:
        return self.box.currentData() or ""

    def set_value(self, source: str) -> None:
        index = self.box.findData(source)
        if index < 0:
            label = f"{Path(source).name} — {source}" if not source.startswith("bundled:") else source
            self.box.addItem(label, source)
            self.box.setItemData(self.box.count() - 1, source, 3)
            index = self.box.count() - 1
        self.box.setCurrentIndex(index)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a data file", str(Path.home()), FILE_FILTER)
        if path:
            self.set_value(path)
