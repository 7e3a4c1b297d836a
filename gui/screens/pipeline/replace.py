"""Replacing the pipeline without losing work: where it came from, whether it was edited, and Undo.

A preset, a recipe file or a re-run replaces every step and the data settings at once.
:class:`RecipeOrigin` remembers what the page held when it was last loaded or saved (so an edit is
known, the preset box can say "Custom (edited from X)" and the name can follow), and the pipeline
that a replacement pushed out (so Ctrl+Z brings it back).  :func:`confirm_replace` asks first when
the person's edits would be replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtWidgets import QMessageBox, QWidget

EDITED = " (edited)"


def content(recipe: Any) -> dict:
    """What a replacement would lose: steps, data, measurements and output (not the name or the model)."""
    raw = recipe.to_dict()
    return {key: raw[key] for key in ("data", "evaluation", "output", "steps")}


def edited_name(base: str) -> str:
    """``base`` marked as edited, once: "Quick try" → "Quick try (edited)"."""
    return base if base.endswith(EDITED) else base + EDITED


@dataclass
class RecipeOrigin:
    """What the pipeline was last loaded from or saved as (``label``: a preset's or a file's name, or
    None for a new one), its content then, its name then and whether the person typed a name since."""

    label: str | None = None
    kind: str = "new"  # "preset", "file" (loaded or saved), "recipe" (e.g. a re-run), "new"
    path: str = ""  # the preset's file, so the preset box can show it again
    baseline: dict = field(default_factory=dict)
    base_name: str = "untitled"
    name_typed: bool = False

    def steps_edited(self, now: dict) -> bool:
        """Whether the steps, data or measurement settings differ from the baseline."""
        return now != self.baseline

    def work_at_risk(self, now: dict, name: str) -> bool:
        """Whether replacing the pipeline would lose something the person did (edits or a typed name)."""
        return self.steps_edited(now) or (self.name_typed and name.strip() != self.base_name)

    def preset_text(self, now: dict) -> str | None:
        """What the preset box's first entry says (None: the box shows the preset itself)."""
        edited = self.steps_edited(now)
        if self.kind == "preset" and not edited:
            return None
        if self.label is None or self.kind == "new":
            return "Custom" if edited else "Choose a preset…"
        return f"Custom (edited from {self.label})" if edited else f"Custom (from {self.label})"

    def name_for(self, now: dict, name: str) -> str:
        """The recipe name to show: it follows edits ("X (edited)") unless the person typed their own."""
        if self.name_typed or self.kind == "new":
            return name
        return edited_name(self.base_name) if self.steps_edited(now) else self.base_name


@dataclass
class Replaced:
    """The pipeline a replacement pushed out, and what the page said about it then (for Undo)."""

    recipe: Any  # core.engine.recipe.Recipe
    origin: RecipeOrigin
    by: str  # what replaced it, for the note: 'Preset "X"', 'Recipe file mine.yaml'


def confirm_replace(parent: QWidget | None, what: str) -> bool:
    """Ask before ``what`` (e.g. 'the preset "X"') replaces an edited pipeline; True to replace."""
    box = QMessageBox(QMessageBox.Icon.Question, "Replace your pipeline?",
                      f"Replace your edited pipeline with {what}?",
                      QMessageBox.StandardButton.Ok | QMessageBox.StandardButton.Cancel, parent)
    box.setInformativeText("Its steps, data and measurement settings take the place of yours. If you change "
                           "your mind afterwards, press Undo (Ctrl+Z) on this page to get yours back.")
    box.button(QMessageBox.StandardButton.Ok).setText("Replace")
    box.button(QMessageBox.StandardButton.Cancel).setText("Keep my pipeline")
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    return int(box.exec()) == int(QMessageBox.StandardButton.Ok)
