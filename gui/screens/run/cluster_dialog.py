"""Run → "Run on a cluster…": write the current recipe and the exact launch commands into a folder to copy.

The files and the instructions come from :mod:`core.engine.cluster_launch`; this dialog only asks how
many machines and GPUs, and where to write, then says in plain words what to copy where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.engine.cluster_launch import ClusterLayout, instructions, write_cluster_folder
from core.errors import StudioError

INTRO = ("Compress this recipe on a cluster or a machine with several GPUs. The app writes the recipe and the "
         "command that starts it into a folder; you copy that folder to the cluster and run one command on each "
         "machine. The GPUs share the calibration work, and the result comes back as an ordinary result folder.")


class ClusterDialog(QDialog):
    """Asks machines × GPUs and a folder; :meth:`write` puts the files there and shows what to do next."""

    def __init__(self, recipe: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.recipe = recipe
        self.written: list[Path] = []
        self.setWindowTitle("Run on a cluster")
        layout = QVBoxLayout(self)
        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.machines = QSpinBox(minimum=1, maximum=1024, value=1)
        self.machines.setToolTip("How many computers (nodes) take part.")
        self.per_machine = QSpinBox(minimum=1, maximum=64, value=2)
        self.per_machine.setToolTip("One process per GPU on each machine.")
        self.kind = QComboBox()
        self.kind.addItem("GPUs (CUDA)", True)
        self.kind.addItem("CPU processes", False)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("an empty folder for the files to copy")
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._ask_folder)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(choose)
        form.addRow("Machines", self.machines)
        form.addRow("GPUs per machine", self.per_machine)
        form.addRow("Run on", self.kind)
        form.addRow("Write into", row)
        layout.addLayout(form)
        self.guide = QPlainTextEdit(readOnly=True)
        self.guide.setMinimumHeight(170)
        layout.addWidget(self.guide)
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.write_button = buttons.addButton("Write files", QDialogButtonBox.ButtonRole.ActionRole)
        self.write_button.clicked.connect(self.write)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        for signal in (self.machines.valueChanged, self.per_machine.valueChanged, self.kind.currentIndexChanged):
            signal.connect(self._show_guide)
        self._show_guide()

    def layout_chosen(self) -> ClusterLayout:
        return ClusterLayout(self.machines.value(), self.per_machine.value(), bool(self.kind.currentData()))

    def _show_guide(self) -> None:
        text = self.folder.text().strip()
        self.guide.setPlainText(instructions(self.layout_chosen(), Path(text) if text else None))

    def _ask_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Write the cluster files into", str(Path.home()))
        if path:
            self.folder.setText(path)
            self._show_guide()

    def write(self) -> bool:
        """Write the files into the chosen folder; say what was written, or why not, in the dialog."""
        text = self.folder.text().strip()
        if not text:
            self.status.setText("Choose a folder to write the files into first.")
            return False
        try:
            self.written = write_cluster_folder(self.recipe, Path(text), self.layout_chosen())
        except StudioError as exc:
            self.status.setText(f"Nothing was written: {exc}")
            return False
        self._show_guide()
        self.status.setText(f"Wrote {', '.join(p.name for p in self.written)} into {text}. "
                            "Follow the steps above.")
        return True


def show_cluster_dialog(window: Any) -> ClusterDialog:
    """Open the dialog for the Pipeline page's current recipe (kept on ``window.cluster_dialog``)."""
    dialog = ClusterDialog(window.pipeline_panel.build_recipe(), window)
    window.cluster_dialog = dialog
    dialog.open()
    return dialog
