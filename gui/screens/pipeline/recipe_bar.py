"""Presets, saving and loading recipes, and where results are written."""

from __future__ import annotations

from pathlib import Path

import yaml
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from core.paths import data_dir

PRESETS_DIR = Path(__file__).resolve().parents[3] / "resources" / "presets"
RECIPE_FILTER = "Recipes (*.yaml *.yml *.json)"
PLACEHOLDER = "Choose a preset…"


def list_presets(folder: Path = PRESETS_DIR) -> list[tuple[str, Path, str]]:
    """(name, path, description) of every preset, read cheaply (validated only when applied)."""
    found = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        steps = "; ".join(f"{s.get('technique')} {s.get('params') or ''}".strip() for s in raw.get("steps") or [])
        parts = [str(raw["description"]).strip()] if raw.get("description") else []
        parts += [f"Steps: {steps}"] if steps else []
        found.append((str(raw.get("name", path.stem)), path, "\n\n".join(parts)))
    return found


def default_output_root() -> Path:
    return data_dir() / "outputs"


class RecipeBar(QGroupBox):
    preset_chosen = Signal(object)  # Path
    load_requested = Signal(object)  # Path
    save_requested = Signal(object)  # Path

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Recipe", parent)
        self.setToolTip("A recipe is everything on this page. Save it to re-run it later or from the "
                        "command line (compression-studio-cli run recipe.yaml).")
        self.presets = QComboBox()
        self.presets.setToolTip("Ready-made recipes. Choosing one replaces the steps, data and measurements "
                                "on this page (if you edited them, you are asked first, and Undo (Ctrl+Z) "
                                "brings yours back); the model stays the one from the Model page.")
        # The list opens below the box, first entry at the top, instead of centred on the current entry
        # (where a second click on the box would pick whatever preset lies under the mouse).
        self.presets.setStyleSheet("QComboBox { combobox-popup: 0; }")
        self.presets.addItem(PLACEHOLDER, None)
        for name, path, description in list_presets():
            self.presets.addItem(name, str(path))
            self.presets.setItemData(self.presets.count() - 1, description or name, 3)  # ToolTipRole
        self.presets.setMaxVisibleItems(max(10, self.presets.count()))
        self.presets.activated.connect(self._preset_activated)
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save this recipe as a YAML file.")
        self.save_button.clicked.connect(self._ask_save)
        self.load_button = QPushButton("Load…")
        self.load_button.setToolTip("Load a recipe file saved earlier (YAML or JSON).")
        self.load_button.clicked.connect(self._ask_load)
        self.output = QLineEdit(str(default_output_root()))
        self.output.setToolTip("Each run writes a new folder inside this one, named after the recipe and "
                               "the time. Nothing is written if the run is cancelled or fails.")
        self.output_button = QPushButton("Choose…")
        self.output_button.setToolTip("Choose the folder that run results are written into.")
        self.output_button.clicked.connect(self._ask_output)

        files = QHBoxLayout()  # the preset box has a row of its own: "Custom (edited from …)" stays readable
        files.addWidget(self.load_button)
        files.addWidget(self.save_button)
        files.addStretch(1)
        out = QHBoxLayout()
        out.addWidget(self.output, 1)
        out.addWidget(self.output_button)
        form = QFormLayout(self)
        form.addRow("Preset:", self.presets)
        form.addRow("Recipe file:", files)
        form.addRow("Results in:", out)

    def output_root(self) -> Path:
        return Path(self.output.text().strip() or default_output_root()).expanduser()

    def show_origin(self, text: str | None, path: str = "") -> None:
        """Show the preset at ``path`` as chosen (``text`` None), or a first entry saying ``text``
        (e.g. "Custom (edited from X)") so the box never names a preset the pipeline no longer is."""
        index = self.presets.findData(path) if text is None and path else -1
        self.presets.setItemText(0, text or PLACEHOLDER)
        self.presets.setCurrentIndex(max(0, index))

    def preset_name(self, path: Path) -> str:
        """The name the list shows for the preset file ``path``."""
        index = self.presets.findData(str(path))
        return self.presets.itemText(index) if index > 0 else Path(path).stem

    def _preset_activated(self, index: int) -> None:
        path = self.presets.itemData(index)
        if path:
            self.preset_chosen.emit(Path(path))

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save recipe", str(Path.home() / "recipe.yaml"), RECIPE_FILTER)
        if path:
            self.save_requested.emit(Path(path))

    def _ask_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load recipe", str(Path.home()), RECIPE_FILTER)
        if path:
            self.load_requested.emit(Path(path))

    def _ask_output(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Write results into", str(self.output_root()))
        if path:
            self.output.setText(path)
