"""The summary form of a loaded model: what it is and how big it is, each number explained."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QWidget

from core.eval.size_baseline import OriginalSize
from gui.widgets.formatting import format_count, short_count

# key, label, tooltip
FIELDS = (
    ("architecture", "Architecture", "The model class transformers built, and its family (model_type)."),
    ("parameters", "Parameters", "How many weights the model has (shared weights counted once). "
                                 "More weights usually means better answers but a bigger, slower model."),
    ("nonzero", "Non-zero", "How many weights are not exactly zero, and the share that is zero. "
                            "Pruning raises the zero share; a dense file does not shrink from that alone."),
    ("disk", "Size on disk", "Bytes of the weight files this model was read from, as the file manager "
                             "counts them (1 GB = 1000³ bytes)."),
    ("sixteen", "As a 16-bit model", "Bytes the weights take saved as a 16-bit (bfloat16) transformers model: "
                                     "every weight × 2 bytes, shared weights once, anything stored in another "
                                     "format at its own size. A result is saved in this format (bfloat16) when "
                                     "the source is a 4- or 8-bit GGUF file, so its size is compared with this "
                                     "number, not with the small file; the Export page writes a small GGUF again."),
    ("memory", "Size in memory", "Bytes the weights take in RAM or GPU memory once loaded, and the "
                                 "number format they are stored in."),
    ("bits", "Bits per weight", "How many bits each weight takes, two ways. On disk: size of the weight files "
                                "× 8 ÷ parameters (a 4-bit file takes a little over 4, its scales included). "
                                "In memory: size in memory × 8 ÷ parameters, in the number format the app "
                                "computes with: 32 for float32, 16 for bfloat16. A quantized file is expanded "
                                "to that format when loaded, so the two can differ."),
    ("layers", "Layers", "Number of transformer blocks stacked in the model."),
    ("hidden", "Hidden size", "Length of the vector that represents each token inside the model."),
    ("vocab", "Vocabulary", "Number of distinct tokens (word pieces) the model knows."),
)
EMPTY = "—"


def bits_text(summary: Any) -> str:
    """'5.85 on disk, 32.00 in memory': bits per weight as stored, then as loaded (the number format is
    on the 'Size in memory' line)."""
    in_memory = f"{summary.bits_per_weight:.2f} in memory"
    on_disk = summary.bits_on_disk
    return in_memory if on_disk is None else f"{on_disk:.2f} on disk, {in_memory}"


def disk_text(summary: Any, disk_note: str | None, human_bytes: Any) -> str:
    """'98.4 MB (bundled .gguf, stored as 4-bit GGUF Q4_1)': the bytes of the weight files, where they are and,
    for a GGUF source, how it stores its weights."""
    notes = [note for note in (disk_note, f"stored as {summary.stored_format}" if summary.stored_format else None)
             if note]
    return human_bytes(summary.bytes_on_disk) + (f" ({', '.join(notes)})" if notes else "")


def sixteen_bit_text(summary: Any, human_bytes: Any) -> str:
    """'269.0 MB (results are saved in this format and compared with this size)' for a 4- or 8-bit GGUF source;
    just the size otherwise ('—' when not measured)."""
    size = summary.bytes_as_16bit
    if size is None:
        return EMPTY
    compact = OriginalSize(summary.bytes_on_disk, size, summary.stored_format, summary.stored_bits).compact_gguf
    return human_bytes(size) + (" (a result is saved as bfloat16 by default: compared with this size)"
                                if compact else "")


def summary_texts(summary: Any, source_kind: str | None = None) -> dict[str, str]:
    """The text of every field for a ``core.models.model_info.ModelSummary``."""
    from core.models.model_info import human_bytes  # torch is loaded by now: a model was loaded

    disk_note = {"bundled": "bundled .gguf", "gguf": ".gguf file", "folder": "weight files",
                 "hub": "downloaded weights"}.get(source_kind or "")
    return {
        "architecture": f"{summary.architecture} ({summary.model_type})",
        "parameters": format_count(summary.parameters),
        "nonzero": f"{format_count(summary.nonzero_parameters)} ({summary.sparsity:.1%} zero)",
        "disk": disk_text(summary, disk_note, human_bytes),
        "sixteen": sixteen_bit_text(summary, human_bytes),
        "memory": f"{human_bytes(summary.bytes_in_memory)} as {summary.dtype}",
        "bits": bits_text(summary),
        "layers": format_count(summary.num_layers),
        "hidden": format_count(summary.hidden_size),
        "vocab": f"{format_count(summary.vocab_size)} tokens" if summary.vocab_size else EMPTY,
    }


class ModelSummaryBox(QGroupBox):
    """A form of labelled values; ``values[key]`` is the QLabel showing that field."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Summary", parent)
        self.setToolTip("What the loaded model is and how big it is, measured after loading.")
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
        form.setHorizontalSpacing(16)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setToolTip("Why no model is shown: the last load did not work. Nothing is run until a "
                             "model loads.")
        self.note.hide()
        form.addRow(self.note)
        self.values: dict[str, QLabel] = {}
        for key, label, tooltip in FIELDS:
            name = QLabel(label + ":")
            value = QLabel(EMPTY)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)  # long values ("98.4 MB (bundled .gguf, stored as 4-bit GGUF Q4_1)") wrap, not cut
            name.setMinimumWidth(name.sizeHint().width())  # the names never get cut ("As a 16-bit mode")
            for widget in (name, value):
                widget.setToolTip(tooltip)
            form.addRow(name, value)
            self.values[key] = value
        sample = "Size in memory:" + " " * 6 + "1,234,567,890 (100.0% zero)"
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance(sample) + 48)

    def show_summary(self, summary: Any, source_kind: str | None = None) -> None:
        """Fill every field from a ``ModelSummary``; any failure note goes away."""
        self.note.hide()
        for key, text in summary_texts(summary, source_kind).items():
            self.values[key].setText(text)
        self.values["parameters"].setToolTip(f"{short_count(summary.parameters)} weights. " + FIELDS[1][2])

    def clear(self) -> None:
        """Empty every field (no model shown)."""
        for value in self.values.values():
            value.setText(EMPTY)
        self.values["parameters"].setToolTip(FIELDS[1][2])

    def show_failure(self, line: str) -> None:
        """Empty every field and say, in one plain line at the top, why no model is shown."""
        self.clear()
        self.note.setText(line)
        self.note.show()
