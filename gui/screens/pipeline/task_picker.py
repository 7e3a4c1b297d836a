"""Which zero-shot tasks a run scores before and after, how many questions each, and the time it adds.

One check box per bundled task (``core.data.task_rows.TASKS``) and a spin box for the questions per
task, both bound to a recipe's ``EvalSpec`` (``tasks`` and ``task_limit``) the way ``ParamForm``
binds the other evaluation fields: edits are written straight into the spec and ``changed`` fires.
A person's own ``.jsonl`` entries in ``tasks`` are kept as they are.  A line under the boxes says
how long scoring adds to the run, from :func:`core.eval.task_time.estimate_task_seconds`.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.data.task_rows import TASK_SETUP_HINT, TASKS, tasks_ready
from core.engine.params import param_specs
from core.engine.recipe import EvalSpec
from core.eval.task_time import estimate_task_seconds
from gui.screens.pipeline.param_form import tooltip_for
from gui.widgets.formatting import format_duration

COLUMNS = 3
OWN_FILE_FILTER = "Multiple-choice questions (*.jsonl);;All files (*)"


def task_tooltip(name: str) -> str:
    """What a bundled task asks, how big it is, how it is scored and its licence."""
    info = TASKS[name]
    figure = "accuracy" if info.headline == "acc" else "accuracy with each answer scored per character (acc_norm)"
    return (f"{info.title}: {info.what}\n{info.rows:,} questions in the full set ({info.split} split); "
            f"guessing scores {info.chance:.0%}.\nHeadline figure: {figure}, as papers and lm-eval report it.\n"
            f"Licence: {info.licence}. Source: {info.attribution}.")


def _spec_help(name: str) -> str:
    return next(tooltip_for(s) for s in param_specs(EvalSpec) if s.name == name)


class TaskPicker(QWidget):
    """Edits ``evaluation.tasks`` and ``evaluation.task_limit`` in place; ``changed`` after any edit."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.evaluation = EvalSpec()
        self.parameters: int | None = None
        self.device = "cpu"
        self.model_task = "causal-lm"
        self.ready = tasks_ready()
        self.intro = QLabel("<b>Task accuracy</b> — multiple-choice questions the original and the result both "
                            "answer, scored exactly as lm-eval scores them:")
        self.intro.setWordWrap(True)
        self.intro.setToolTip(_spec_help("tasks"))
        self.boxes: dict[str, QCheckBox] = {}
        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        for index, name in enumerate(TASKS):
            box = QCheckBox(TASKS[name].title)
            box.setToolTip(task_tooltip(name))
            box.toggled.connect(self._boxes_changed)
            self.boxes[name] = box
            grid.addWidget(box, index // COLUMNS, index % COLUMNS)
        self.own_label = QLabel()
        self.own_label.setWordWrap(True)
        self.own_button = QPushButton("Add file…")
        self.own_button.setToolTip("Score a .jsonl file of your own multiple-choice questions too: one per line "
                                   "with 'question', 'choices' (a list of texts) and 'answer' (its index, text or "
                                   "letter).")
        self.own_button.clicked.connect(self.choose_own_file)
        self.clear_button = QPushButton("Remove")
        self.clear_button.setToolTip("Stop scoring your own question files (the bundled tasks stay as ticked).")
        self.clear_button.clicked.connect(self.clear_own_files)
        own_row = QHBoxLayout()
        own_row.addWidget(self.own_label, 1)
        own_row.addWidget(self.own_button)
        own_row.addWidget(self.clear_button)
        self.limit = QSpinBox()
        self.limit.setRange(0, 100000)
        self.limit.setSpecialValueText("all")  # 0 scores every question
        self.limit.setSingleStep(50)
        self.limit.setKeyboardTracking(False)
        self.limit.setToolTip(_spec_help("task_limit"))
        self.limit.valueChanged.connect(self._limit_changed)
        limit_label = QLabel("Questions per task:")
        limit_label.setToolTip(self.limit.toolTip())
        limit_row = QHBoxLayout()
        limit_row.addWidget(limit_label)
        limit_row.addWidget(self.limit)
        limit_row.addStretch(1)
        self.time_line = QLabel()
        self.time_line.setWordWrap(True)
        self.time_line.setToolTip("A rough guess from the questions' length in tokens, the model's size and the "
                                  "device. Both the original and the result "
                                  "answer every question, so the time counts twice.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.addWidget(self.intro)
        layout.addLayout(grid)
        layout.addLayout(own_row)
        layout.addLayout(limit_row)
        layout.addWidget(self.time_line)
        self.set_spec(self.evaluation)

    # -- binding -------------------------------------------------------------------------------------
    def set_spec(self, evaluation: EvalSpec) -> None:
        """Show ``evaluation``'s tasks and limit (no ``changed``: nothing was edited)."""
        self.evaluation = evaluation
        chosen = set(evaluation.tasks)
        for name, box in self.boxes.items():
            box.blockSignals(True)
            box.setChecked(name in chosen)
            box.blockSignals(False)
        self.limit.blockSignals(True)
        self.limit.setValue(int(evaluation.task_limit))
        self.limit.blockSignals(False)
        self._refresh()

    def own_files(self) -> list[str]:
        """The entries of ``tasks`` that are a person's own files, not bundled tasks."""
        return [t for t in self.evaluation.tasks if t not in TASKS]

    def _boxes_changed(self) -> None:
        bundled = [name for name, box in self.boxes.items() if box.isChecked()]
        self._set_tasks(bundled + self.own_files())

    def _limit_changed(self, value: int) -> None:
        self.evaluation.task_limit = int(value)
        self._refresh()
        self.changed.emit()

    def _set_tasks(self, tasks: list[str]) -> None:
        if tasks != self.evaluation.tasks:
            self.evaluation.tasks = tasks
            self._refresh()
            self.changed.emit()

    def choose_own_file(self, path: str | None = None) -> None:
        """Add a .jsonl of one's own questions (asks for it when ``path`` is not given)."""
        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Choose your own multiple-choice questions",
                                                  str(Path.home()), OWN_FILE_FILTER)
        if path and path not in self.evaluation.tasks:
            self._set_tasks([*self.evaluation.tasks, str(path)])

    def clear_own_files(self) -> None:
        self._set_tasks([t for t in self.evaluation.tasks if t in TASKS])

    # -- the model and the time line -------------------------------------------------------------------
    def set_model(self, parameters: int | None, device: str, task: str) -> None:
        """The loaded model's parameter count (None when none is loaded), its device and task."""
        if (parameters, device, task) != (self.parameters, self.device, self.model_task):
            self.parameters, self.device, self.model_task = parameters, device, task
            self._refresh()

    def estimated_seconds(self) -> float | None:
        """Seconds scoring adds to a run (original and result), or None when unknown or nothing is scored."""
        if not self.evaluation.tasks or not self.parameters or not self._applies():
            return None
        once = estimate_task_seconds(self.evaluation.tasks, self.evaluation.task_limit or None, self.parameters,
                                     self.device)
        return 2 * once

    def _applies(self) -> bool:
        return self.model_task == "causal-lm"

    def _refresh(self) -> None:
        usable = self.ready and self._applies()
        for box in self.boxes.values():
            box.setEnabled(usable)
        self.limit.setEnabled(self._applies() and bool(self.evaluation.tasks))
        own = self.own_files()
        self.own_label.setText("Your own questions: " + ", ".join(Path(p).name for p in own) if own
                               else "Your own questions: none")
        self.own_label.setToolTip("\n".join(own) or "Add a .jsonl file of your own multiple-choice questions.")
        self.own_button.setEnabled(self._applies())
        self.clear_button.setVisible(bool(own))
        self.time_line.setText(self._time_text())

    def _time_text(self) -> str:
        if not self._applies():
            return ("Task accuracy is for language models; a classifier is measured on the labelled examples "
                    "instead, so no task is scored.")
        missing = "" if self.ready else (f"The task questions are not installed yet: {TASK_SETUP_HINT} once, then "
                                         "restart the app. ")
        tasks = self.evaluation.tasks
        if not tasks:
            return missing + "No task is scored. Tick a task to measure accuracy before and after."
        count = self.evaluation.task_limit
        questions = f"up to {count:,} questions per task" if count else "every question of each task"
        if not self.parameters:
            return (missing + f"Scoring {len(tasks)} task{'s' if len(tasks) != 1 else ''} ({questions}) adds time "
                    "that depends on the model: load a model on the Model page for an estimate.")
        seconds = self.estimated_seconds() or 0.0
        return (missing + f"Scoring {len(tasks)} task{'s' if len(tasks) != 1 else ''} ({questions}) adds roughly "
                f"{format_duration(seconds)} on {self.device}: the original and the result each answer them "
                f"(2 × {format_duration(seconds / 2)}).")

    def error(self) -> str:
        """Why the chosen tasks cannot be scored ('' when they can)."""
        bundled = [TASKS[t].title for t in self.evaluation.tasks if t in TASKS]
        if bundled and not self.ready and self._applies():
            return (f"evaluation: the questions of {', '.join(bundled)} are not installed: {TASK_SETUP_HINT}, "
                    "or untick the tasks")
        return ""
