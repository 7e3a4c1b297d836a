"""The Pipeline page: the ordered compression steps, their settings, the data, and an estimate.

Everything here edits one recipe; :meth:`PipelinePanel.build_recipe` hands the Run page an
independent copy of it, so editing while a run goes on never changes the running recipe.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.engine.recipe import DataSpec, EvalSpec, ModelSpec, Recipe, Step
from gui.errors import show_error
from gui.screens.pipeline.data_box import DataBox
from gui.screens.pipeline.estimate_box import RED, EstimateBox
from gui.screens.pipeline.palette import StepPalette
from gui.screens.pipeline.param_form import ParamForm
from gui.screens.pipeline.recipe_bar import RecipeBar
from gui.screens.pipeline.replace import RecipeOrigin, Replaced, confirm_replace, content
from gui.screens.pipeline.step_list import StepList
from gui.widgets.labels import heading


@dataclass
class ModelContext:
    """What the Model page says: the model to compress, its task, the device and what it measured."""

    source: str
    task: str = "causal-lm"
    device: str = "cpu"
    summary: Any = None  # core.models.model_info.ModelSummary of the loaded model, or None
    available_bytes: int | None = None
    load_error: str | None = None  # the Model page's line when its last load failed: nothing may run


RUN_TOOLTIP = ("Go to the Run page and start compressing in the background. The window stays usable; "
               "you can cancel.")
BLOCKED_TOOLTIP = "The last model load failed: load a model on the Model page first, then run."


def _button(text: str, tooltip: str, slot: Callable[[], Any]) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tooltip)
    button.clicked.connect(slot)
    return button


def _scrolled(widget: QWidget) -> QScrollArea:
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    scroll.setWidget(widget)
    return scroll


def preset_names_model(path: Path) -> bool:
    """Whether a preset file has a ``model:`` section (e.g. a classifier preset needs a classifier)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and bool(raw.get("model"))


class PipelinePanel(QWidget):
    run_requested = Signal()
    recipe_loaded = Signal(object)  # core.engine.recipe.Recipe, from a file (its model source may differ)

    def __init__(self, context: Callable[[], ModelContext], parent: QWidget | None = None):
        super().__init__(parent)
        self.context = context
        self.techniques: dict[str, Any] = {}
        self.form: ParamForm | None = None
        self._estimate_timer = QTimer(self, singleShot=True, interval=150, timeout=self.update_estimate)

        self.palette_view = StepPalette()
        self.palette_view.chosen.connect(self.add_step)
        self.step_list = StepList()
        self.step_list.steps_changed.connect(self.schedule_estimate)
        self.step_list.currentRowChanged.connect(self._show_form)
        self.name = QLineEdit("untitled")
        self.name.setToolTip("A name for this recipe; the output folder of each run starts with it.")
        self.form_title = QLabel("Select a step to see its settings.")
        self.form_title.setWordWrap(True)
        self.form_holder = QVBoxLayout()
        self.data_box = DataBox()
        self.data_box.changed.connect(self.schedule_estimate)
        self.recipe_bar = RecipeBar()
        self.recipe_bar.preset_chosen.connect(self.apply_preset)
        self.recipe_bar.load_requested.connect(self.load_file)
        self.recipe_bar.save_requested.connect(self.save_file)
        self.estimate_box = EstimateBox()
        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet(f"color: {RED};")
        self.run_button = _button("Run this pipeline  (Ctrl+R)", RUN_TOOLTIP, self.run_requested.emit)
        self.undo_note = QLabel()
        self.undo_note.setWordWrap(True)
        self.undo_button = _button("Undo  (Ctrl+Z)", "Bring back the pipeline you had before: its steps, data "
                                   "settings and name.", self.undo_replace)
        self.undo_row = QWidget()
        undo_layout = QHBoxLayout(self.undo_row)
        undo_layout.setContentsMargins(0, 0, 0, 0)
        undo_layout.addWidget(self.undo_note, 1)
        undo_layout.addWidget(self.undo_button)
        self.undo_row.hide()
        # Window-wide, so it works from the step list; a text field with focus keeps Ctrl+Z for its own text.
        QShortcut(QKeySequence.StandardKey.Undo, self, activated=self.undo_replace,
                  context=Qt.ShortcutContext.WindowShortcut)
        self._build_layout()
        # Where the pipeline came from, to know an edit; what a replacement pushed out, for Undo.
        self.origin = RecipeOrigin(baseline=self._content())
        self._replaced: Replaced | None = None
        self._replaced_with: dict = {}
        self._applying = False
        self.name.textEdited.connect(self._name_typed)
        self.step_list.steps_changed.connect(self._after_edit)
        self.data_box.changed.connect(self._after_edit)

    def _build_layout(self) -> None:
        palette_group = QGroupBox("Techniques")
        palette_layout = QVBoxLayout(palette_group)
        palette_layout.addWidget(self.palette_view, 1)
        palette_layout.addWidget(_button("Add step", "Append the selected technique to the pipeline.",
                                         self._add_selected))

        steps_group = QGroupBox("Steps (run top to bottom)")
        buttons = QHBoxLayout()
        buttons.addWidget(_button("Up", "Move the selected step one place earlier.",
                                  lambda: self.step_list.move_current(-1)))
        buttons.addWidget(_button("Down", "Move the selected step one place later.",
                                  lambda: self.step_list.move_current(1)))
        buttons.addStretch(1)
        buttons.addWidget(_button("Remove", "Remove the selected step (or press Delete).",
                                  self.step_list.remove_current))
        steps_layout = QVBoxLayout(steps_group)
        steps_layout.addWidget(self.step_list, 1)
        steps_layout.addLayout(buttons)
        form_group = QGroupBox("Settings of the selected step")
        form_group.setToolTip("Hover over a setting to see what it does and which values are allowed.")
        form_inner = QWidget()
        form_layout = QVBoxLayout(form_inner)
        form_layout.addWidget(self.form_title)
        form_layout.addLayout(self.form_holder)
        form_layout.addStretch(1)
        QVBoxLayout(form_group).addWidget(_scrolled(form_inner))
        middle = QSplitter(Qt.Orientation.Vertical)
        middle.addWidget(steps_group)
        middle.addWidget(form_group)
        middle.setChildrenCollapsible(False)
        middle.setSizes([220, 480])

        right_inner = QWidget()
        right = QVBoxLayout(right_inner)
        right.setContentsMargins(0, 0, 0, 0)
        name_row = QHBoxLayout()
        name_row.addWidget(QLabel("Recipe name:"))
        name_row.addWidget(self.name, 1)
        right.addLayout(name_row)
        for widget in (self.recipe_bar, self.undo_row, self.data_box, self.estimate_box, self.problems, self.run_button):
            right.addWidget(widget)
        right.addStretch(1)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(palette_group)
        self.splitter.addWidget(middle)
        right_scroll = _scrolled(right_inner)
        right_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        right_inner.setMinimumWidth(380)
        # The splitter may not squeeze the column below its content (it would be cut off on the right:
        # there is no sideways scrolling); room for the vertical scroll bar too.
        right_scroll.setMinimumWidth(380 + right_scroll.verticalScrollBar().sizeHint().width() + 4)
        self.splitter.addWidget(right_scroll)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 1)
        self.splitter.setSizes([250, 410, 500])
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Pipeline"))
        layout.addWidget(QLabel("Choose the compression steps, in order, set each one, and choose the data "
                                "they learn from and are measured on."))
        layout.addWidget(self.splitter, 1)

    # -- techniques --------------------------------------------------------------------------
    def set_environment(self, environment: Any) -> None:
        self.techniques = dict(environment.techniques)
        self.step_list.titles = {name: info.title for name, info in self.techniques.items()}
        self.refresh_availability()

    def refresh_availability(self) -> None:
        ctx = self.context()
        if self.techniques:
            self.palette_view.show_techniques(self.techniques, ctx.device, ctx.task)
        self.step_list.refresh_labels()
        self.refresh_run_button(ctx)
        self.schedule_estimate()

    def refresh_run_button(self, ctx: ModelContext | None = None) -> None:
        """Run is off while the Model page's last load failed (a run would use the source that failed)."""
        blocked = bool((ctx or self.context()).load_error)
        self.run_button.setEnabled(not blocked)
        self.run_button.setToolTip(BLOCKED_TOOLTIP if blocked else RUN_TOOLTIP)

    def _add_selected(self) -> None:
        name = self.palette_view.selected_technique()
        if name:
            self.add_step(name)

    def add_step(self, name: str) -> Step:
        info = self.techniques[name]
        step = Step(name, info.config_cls())
        self.step_list.add_step(step)
        return step

    # -- the selected step's form ------------------------------------------------------------
    def _show_form(self, row: int) -> None:
        if self.form is not None:
            self.form.setParent(None)
            self.form.deleteLater()
            self.form = None
        step = self.step_list.step_at(row)
        if step is None:
            self.form_title.setText("Select a step to see its settings.")
            return
        info = self.techniques.get(step.technique)
        title = info.title if info else step.technique
        self.form_title.setText(f"<b>{title}</b><br>{info.summary if info else ''}")
        self.form = ParamForm(step.config, where=f"step {row + 1} ({step.technique}): ")
        self.form.changed.connect(self.step_list.refresh_labels)
        self.form.changed.connect(self.schedule_estimate)
        self.form.changed.connect(self._after_edit)
        self.form_holder.addWidget(self.form)

    # -- the recipe ----------------------------------------------------------------------------
    def build_recipe(self) -> Recipe:
        """An independent copy of the recipe on screen (the Run page may use it in another thread)."""
        ctx = self.context()
        return self._compose(ModelSpec(source=ctx.source, task=ctx.task))

    def _compose(self, model: ModelSpec) -> Recipe:
        steps = [Step(s.technique, copy.deepcopy(s.config), s.enabled) for s in self.step_list.ordered_steps()]
        return Recipe(name=self.name.text().strip() or "untitled", model=model,
                      data=copy.deepcopy(self.data_box.data), evaluation=copy.deepcopy(self.data_box.evaluation),
                      steps=steps, output=copy.deepcopy(self.data_box.output))

    def _content(self) -> dict:
        return content(self._compose(ModelSpec()))

    def _set_recipe(self, recipe: Recipe) -> None:
        self._applying = True
        try:
            self.name.setText(recipe.name)
            self.name.setCursorPosition(0)
            self.step_list.set_steps([Step(s.technique, copy.deepcopy(s.config), s.enabled) for s in recipe.steps])
            self.data_box.set_specs(copy.deepcopy(recipe.data), copy.deepcopy(recipe.evaluation),
                                    copy.deepcopy(recipe.output))
        finally:
            self._applying = False

    def apply_recipe(self, recipe: Recipe) -> None:
        """Show ``recipe`` on the page (a re-run from History); Undo brings back what was here."""
        self._replace(recipe, RecipeOrigin(label=recipe.name, kind="recipe"), f"Recipe “{recipe.name}”")

    def _replace(self, recipe: Recipe, origin: RecipeOrigin, by: str) -> None:
        previous, before, previous_origin = self.build_recipe(), self._content(), self.origin
        self._set_recipe(recipe)
        self.origin = origin
        origin.baseline, origin.base_name = self._content(), recipe.name
        if before != origin.baseline or previous.name != recipe.name:
            self._replaced, self._replaced_with = Replaced(previous, previous_origin, by), origin.baseline
            self.undo_note.setText(f"{by} loaded — your previous pipeline is kept.")
            self.undo_row.show()
        else:
            self._forget_replaced()
        self._show_origin()
        self.schedule_estimate()

    def undo_replace(self) -> bool:
        """Bring back the pipeline the last preset, recipe file or re-run replaced (Ctrl+Z); False if none."""
        replaced = self._replaced
        if replaced is None:
            return False
        self._forget_replaced()
        self._set_recipe(replaced.recipe)
        self.origin = replaced.origin
        self._show_origin()
        ctx = self.context()
        if (replaced.recipe.model.source, replaced.recipe.model.task) != (ctx.source, ctx.task):
            self.recipe_loaded.emit(replaced.recipe)  # a classifier preset had switched the model: back too
        self.schedule_estimate()
        return True

    def _forget_replaced(self) -> None:
        self._replaced = None
        self.undo_row.hide()

    def _name_typed(self, _text: str) -> None:
        self.origin.name_typed = True

    def _after_edit(self) -> None:
        """An edit: the preset box stops naming the preset, the name follows, Undo is no longer offered."""
        if self._applying:
            return
        if self._replaced is not None and self._content() != self._replaced_with:
            self._forget_replaced()
        self._show_origin()

    def _show_origin(self) -> None:
        now = self._content()
        self.recipe_bar.show_origin(self.origin.preset_text(now), self.origin.path)
        name = self.origin.name_for(now, self.name.text())
        if name != self.name.text():
            self.name.setText(name)
            self.name.setCursorPosition(0)  # a long name shows its start, not its end

    def _work_at_risk(self) -> bool:
        return self.origin.work_at_risk(self._content(), self.name.text())

    def apply_preset(self, path: Path) -> None:
        """Apply a preset to the current model; a preset that names a model of its own switches to it.

        Over an edited pipeline it asks first; Undo (Ctrl+Z) brings the replaced pipeline back.
        """
        name = self.recipe_bar.preset_name(path)
        if self._work_at_risk() and not confirm_replace(self.window(), f"the preset “{name}”"):
            self._show_origin()  # the box shows what the page still holds
            return
        self._load(path, "Applying the preset", preset_names_model(path),
                   RecipeOrigin(label=name, kind="preset", path=str(path)), f"Preset “{name}”")

    def load_file(self, path: Path) -> None:
        """Load a recipe file (its model too); over an edited pipeline it asks first, and can be undone."""
        if self._work_at_risk() and not confirm_replace(self.window(), f"the recipe file {Path(path).name}"):
            return
        self._load(path, "Loading the recipe", True, RecipeOrigin(label=Path(path).name, kind="file"),
                   f"Recipe file {Path(path).name}")

    def _load(self, path: Path, action: str, announce: bool, origin: RecipeOrigin, by: str) -> None:
        from core.engine.recipe import load_recipe

        try:
            recipe = load_recipe(path)
        except Exception as exc:  # one error path: a dialog that says what to do
            show_error(exc, self.window(), action)
            return
        self._replace(recipe, origin, by)
        if announce:
            self.recipe_loaded.emit(recipe)

    def save_file(self, path: Path) -> None:
        """Save the recipe; the page then counts as unedited (the saved file is its new baseline)."""
        try:
            self.build_recipe().save(path)
        except Exception as exc:
            show_error(exc, self.window(), "Saving the recipe")
            return
        self.origin = RecipeOrigin(label=Path(path).name, kind="file", baseline=self._content(),
                                   base_name=self.name.text().strip(), name_typed=self.origin.name_typed)
        self._show_origin()

    def output_dir(self, recipe: Recipe) -> Path:
        """A new folder under the chosen root, named after the recipe and the time.

        Two runs started within the same second (a quick re-run) get ``-2``, ``-3``… so the second
        never collides with the first one's output.
        """
        import datetime as dt
        import re

        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", recipe.name).strip("-")[:60] or "run"
        base = self.recipe_bar.output_root() / f"{slug}-{dt.datetime.now():%Y%m%d-%H%M%S}"
        candidate, number = base, 1
        while candidate.exists():
            number += 1
            candidate = base.with_name(f"{base.name}-{number}")
        return candidate

    def new_recipe(self) -> None:
        """An empty pipeline with default data settings (Undo brings back what was here)."""
        self._replace(Recipe(data=DataSpec(), evaluation=EvalSpec()), RecipeOrigin(), "A new, empty pipeline")

    # -- estimate and problems -------------------------------------------------------------------
    def schedule_estimate(self) -> None:
        self._estimate_timer.start()

    def current_problems(self) -> list[str]:
        ctx = self.context()
        problems = [BLOCKED_TOOLTIP] if ctx.load_error else []
        problems += self.data_box.errors()
        for row, step in enumerate(self.step_list.ordered_steps()):
            from core.engine.params import validate_config

            try:
                validate_config(step.config, f"Step {row + 1}: ")
            except Exception as exc:
                problems.append(str(exc))
            info = self.techniques.get(step.technique)
            reason = info.unavailable_reason(device=ctx.device, task=ctx.task) if info else None
            if reason and step.enabled:
                problems.append(f"Step {row + 1}: {reason}")
        return problems

    def update_estimate(self) -> None:
        ctx = self.context()
        recipe = self.build_recipe()
        parameters = int(ctx.summary.parameters) if ctx.summary is not None else None
        self.data_box.tasks.set_model(parameters, ctx.device, ctx.task)
        try:
            self.estimate_box.show_estimate(ctx.summary, recipe, ctx.device, ctx.available_bytes,
                                            self.data_box.tasks.estimated_seconds())
        except Exception as exc:  # an estimate must never break the page
            self.estimate_box.label.setText(f"No estimate: {exc}")
        problems = self.current_problems()
        self.problems.setText("\n".join(f"⚠ {p}" for p in problems))
        self.problems.setVisible(bool(problems))
