"""Choosing where a model comes from: the bundled default, a folder, a .gguf file or a hub id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QPushButton, QSizePolicy, QWidget

from core.models.bundled import DEFAULT_MODEL

# Sources shown to people by a friendly name rather than their id.
SOURCE_LABELS = {DEFAULT_MODEL: "SmolLM2-135M-Instruct (bundled, works offline)"}


def is_model_path(path: Path) -> bool:
    """Whether a dropped or chosen path can be a model: a folder or a .gguf file."""
    return path.is_dir() or (path.is_file() and path.suffix.lower() == ".gguf")


class SourcePicker(QWidget):
    """An editable source box with "Open folder…", "Open .gguf file…" and "Search the hub…" buttons."""

    activated = Signal()  # Enter pressed in the box

    def __init__(self, task: Callable[[], str] = lambda: "causal-lm", parent: QWidget | None = None):
        super().__init__(parent)
        self.task = task  # the Model page's task, so the hub search lists models for it
        self.search_dialog = None  # made on first use, then kept (a search may still be answering)
        self.box = QComboBox()
        self.box.setEditable(True)
        self.box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.box.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.box.setMinimumContentsLength(40)
        for source, label in SOURCE_LABELS.items():
            self.box.addItem(label, source)
        self.box.lineEdit().setPlaceholderText("A model folder, a .gguf file, or a Hugging Face id like owner/name")
        self.box.lineEdit().setClearButtonEnabled(True)
        self.box.lineEdit().returnPressed.connect(self.activated)
        self.box.setToolTip("The model to load: the bundled SmolLM2 (works offline), a folder with "
                            "config.json and weights, a .gguf file, or a Hugging Face id such as "
                            "HuggingFaceTB/SmolLM2-360M (downloaded once). Press Enter to load.")
        self.folder_button = QPushButton("Open folder…")
        self.folder_button.setToolTip("Pick a folder that holds a model's config.json and weight files "
                                      "(*.safetensors or pytorch_model.bin).")
        self.folder_button.clicked.connect(self.choose_folder)
        self.gguf_button = QPushButton("Open .gguf file…")
        self.gguf_button.setToolTip("Pick a single-file model in GGUF format (as used by llama.cpp). "
                                    "It is converted once and cached, so later loads are fast.")
        self.gguf_button.clicked.connect(self.choose_gguf)
        self.hub_button = QPushButton("Search the hub…")
        self.hub_button.setToolTip("Find a model on the Hugging Face hub by name (needs the internet); the chosen "
                                   "id goes into the box and Load downloads it once.")
        self.hub_button.clicked.connect(self.search_hub)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.box, 1)
        layout.addWidget(self.folder_button)
        layout.addWidget(self.gguf_button)
        layout.addWidget(self.hub_button)

    def source(self) -> str:
        """The source id to load (friendly names mapped back to their ids)."""
        text = self.box.currentText().strip()
        for source, label in SOURCE_LABELS.items():
            if text == label:
                return source
        return text

    def set_source(self, source: str) -> None:
        self.box.setEditText(SOURCE_LABELS.get(source, source))

    def _start_folder(self) -> str:
        current = Path(self.source()).expanduser()
        if current.is_dir():
            return str(current.parent)
        return str(current.parent) if current.parent.is_dir() and str(current.parent) != "." else str(Path.home())

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a model folder", self._start_folder())
        if folder:
            self.set_source(folder)

    def search_hub(self) -> None:
        """Open the hub search; a model chosen there becomes the source."""
        from gui.screens.model.hub_search import HubSearchDialog

        if self.search_dialog is None:
            self.search_dialog = HubSearchDialog(self.task, self)
        if self.search_dialog.exec() and self.search_dialog.chosen_id():
            self.set_source(self.search_dialog.chosen_id())

    def choose_gguf(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a .gguf model file", self._start_folder(),
                                              "GGUF models (*.gguf);;All files (*)")
        if path:
            self.set_source(path)
