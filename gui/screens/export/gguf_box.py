"""The Export page's GGUF group: the types to write (ticked, each with its estimated size and a plain line), the
importance matrix, the Modelfile/README choice, per-file and overall progress of the queue, and the llama.cpp
command that runs what was written (copyable).

The widgets only; :class:`gui.screens.export.panel.ExportPanel` runs the job (:mod:`core.engine.gguf_queue`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
)

from core.io.gguf_cards import llama_cli_command
from core.io.gguf_types import GGUF_TYPE_INFO, QUANTIZER_TYPES, estimated_bytes
from core.io.llama_cpp_tools import missing_reason
from gui.widgets.formatting import format_bytes

NAME = Qt.ItemDataRole.UserRole


class GgufBox(QGroupBox):
    """Which GGUF types to write and how; the queue's progress; the command line of the result."""

    def __init__(self, export_button: QPushButton, parent: Any = None):
        super().__init__("GGUF files (llama.cpp, Ollama, LM Studio)", parent)
        self.quantizer_missing = missing_reason("llama-quantize")
        self._current = ""  # the type being written now
        self.types = QListWidget()
        self.types.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.types.setToolTip("Tick every type to write: they are made one after another, each as its own .gguf "
                              "file. The K- and i-quants are made by llama.cpp's own quantizer.")
        for name, (text, _bits) in GGUF_TYPE_INFO.items():
            item = QListWidgetItem(f"{name} — {text}")
            item.setData(NAME, name)
            item.setToolTip(text)
            item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            item.setCheckState(Qt.CheckState.Unchecked)
            if name in QUANTIZER_TYPES and self.quantizer_missing:  # greyed out, saying how to get llama.cpp
                item.setFlags(Qt.ItemFlag.ItemIsUserCheckable)
                item.setToolTip(self.quantizer_missing)
            self.types.addItem(item)
        default = "Q8_0" if self.quantizer_missing else "Q4_K_M"
        self._item(default).setCheckState(Qt.CheckState.Checked)
        self.types.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # narrow: elided, tooltip
        self.types.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.types.setSpacing(2)  # rows packed edge to edge read as one block of text
        rows = self.types.count()
        self.types.setFixedHeight((self.types.sizeHintForRow(0) + 4) * rows + 2 * self.types.frameWidth() + 4)
        self.imatrix = QCheckBox("Importance matrix from the calibration text (computed once for all types)")
        self.imatrix.setToolTip(
            "Measure which inputs of every layer carry the most signal on the result's calibration text (llama.cpp's "
            "imatrix, computed block by block here) and round those weights most carefully. Costs one pass over "
            "the calibration text for the whole queue; worth it below 5 bits."
            + (f" Unavailable: {self.quantizer_missing}" if self.quantizer_missing else ""))
        self.cards = QCheckBox("Also write an Ollama Modelfile per file and a README model card next to them")
        self.cards.setChecked(True)
        self.cards.setToolTip("The Modelfile holds FROM, the chat template (when it converts exactly) and the stop "
                              "words; the README says what was done to the model, the files and sizes, and how to "
                              "run each one. Files this app did not write are never replaced.")
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)  # no blank band around it
        self.file_progress = QProgressBar()
        self.file_progress.setRange(0, 1000)
        self.file_progress.setToolTip("Progress of the file being written now.")
        self.queue_progress = QProgressBar()
        self.queue_progress.setToolTip("How many of the ticked types are written.")
        self.command = QLineEdit()
        self.command.setReadOnly(True)
        self.command.setPlaceholderText("Export a GGUF: the llama.cpp command that runs it appears here")
        self.command.setToolTip("Run the exported file with llama.cpp (the README card next to it has this line "
                                "for every type, and the Ollama commands).")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the command line to the clipboard.")
        self.copy_button.clicked.connect(self.copy_command)
        self.copy_button.setEnabled(False)

        layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        layout.addRow(self.note)
        layout.addRow("Types", self.types)
        layout.addRow("", self.imatrix)
        layout.addRow("", self.cards)
        buttons = QHBoxLayout()
        buttons.addWidget(export_button)
        buttons.addStretch(1)
        layout.addRow("", buttons)
        layout.addRow("This file", self.file_progress)
        layout.addRow("All files", self.queue_progress)
        command = QHBoxLayout()
        command.addWidget(self.command, 1)
        command.addWidget(self.copy_button)
        layout.addRow("Run it", command)
        self.show_progress(False)

    def _item(self, name: str) -> QListWidgetItem:
        return next(self.types.item(i) for i in range(self.types.count()) if self.types.item(i).data(NAME) == name)

    def type_names(self) -> list[str]:
        return [self.types.item(i).data(NAME) for i in range(self.types.count())]

    def item_text(self, name: str) -> str:
        return self._item(name).text()

    def checked(self) -> list[str]:
        """The ticked types, in the list's order (best quality first)."""
        return [self.types.item(i).data(NAME) for i in range(self.types.count())
                if self.types.item(i).checkState() == Qt.CheckState.Checked]

    def set_checked(self, names: list[str]) -> None:
        for i in range(self.types.count()):
            item = self.types.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.data(NAME) in names else Qt.CheckState.Unchecked)

    def label_sizes(self, parameters: int | None) -> None:
        """Each type's line with its estimated file size, from the result's parameter count."""
        for name in self.type_names():
            size = f" (about {format_bytes(estimated_bytes(int(parameters), name))})" if parameters else ""
            self._item(name).setText(f"{name} — {GGUF_TYPE_INFO[name][0]}{size}")

    def set_enabled(self, enabled: bool) -> None:
        self.types.setEnabled(enabled)
        self.cards.setEnabled(enabled)
        weighable = any(name != "F16" for name in self.checked())  # F16 rounds nothing: nothing to weigh
        self.imatrix.setEnabled(enabled and weighable and not self.quantizer_missing)

    def show_progress(self, shown: bool) -> None:
        """The two bars only while a GGUF queue runs (an idle, empty bar looked like a field to fill in)."""
        for bar in (self.file_progress, self.queue_progress):
            self.layout().setRowVisible(bar, shown)  # the whole row, its spacing included

    def start_queue(self, names: list[str]) -> None:
        self.queue_progress.setRange(0, len(names))
        self.queue_progress.setValue(0)
        self.queue_progress.setFormat(f"%v of %m files ({', '.join(names)})")
        self.file_progress.setValue(0)
        self.file_progress.setFormat("%p%")
        self.show_progress(True)

    def on_item(self, item: Any) -> None:
        """A core.engine.gguf_queue.QueueItem: a file starts or is done."""
        if item.done:
            self.queue_progress.setValue(item.index + 1)
            self.file_progress.setValue(1000)
        else:
            self.file_progress.setValue(0)
            self.file_progress.setFormat(f"{item.quant} ({item.index + 1} of {item.total}): %p%")
            self._current = item.quant

    def on_progress(self, stage: str, fraction: float) -> None:
        self.file_progress.setFormat(f"{self._current}: {stage} %p%" if self._current else f"{stage} %p%")
        self.file_progress.setValue(round(fraction * 1000))

    def show_command(self, path: Path | None) -> None:
        self.command.setText(llama_cli_command(path) if path is not None else "")
        self.command.setCursorPosition(0)
        self.copy_button.setEnabled(path is not None)

    def copy_command(self) -> None:
        QGuiApplication.clipboard().setText(self.command.text())
