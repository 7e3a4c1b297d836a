"""The Pipeline page's data and evaluation settings: which texts, how much of them, what to measure
(including the zero-shot tasks scored before and after, :mod:`gui.screens.pipeline.task_picker`).

Under the labelled data it shows the labels found there, with how many examples each has and a
warning for a class with very few examples or one class dominating."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QVBoxLayout, QWidget

from core.data.texts import label_counts, label_warnings
from core.engine.recipe import DataSpec, EvalSpec, OutputSpec
from core.errors import StudioError
from gui.screens.pipeline.data_choice import DataChoice
from gui.screens.pipeline.param_form import ParamForm
from gui.screens.pipeline.task_picker import TaskPicker
from gui.widgets.labels import rich_label

DATA_FIELDS = ("sequence_length", "calibration_windows", "text_column", "label_column")
EVAL_FIELDS = ("perplexity", "max_windows", "perplexity_convention", "kl_to_teacher", "speed")
EVAL_LABELS = {"perplexity": "Measure perplexity", "max_windows": "Evaluation windows",
               "perplexity_convention": "Perplexity counted as in",
               "kl_to_teacher": "Measure KL to original", "speed": "Measure speed"}
OUTPUT_LABELS = {"dtype": "Save weights as"}


class DataBox(QGroupBox):
    """Edits a DataSpec, an EvalSpec and an OutputSpec in place; ``changed`` after any edit."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Data and measurements", parent)
        self.setToolTip("The text the techniques learn from, the text the result is measured on, and "
                        "what is measured before and after.")
        self.calibration = DataChoice("text", "Calibration text: data-aware techniques (Wanda, SparseGPT, …) "
                                      "measure the model's activations on it. Use text like what the model will see.")
        self.evaluation_text = DataChoice("text", "Evaluation text: held-out text on which perplexity is measured "
                                          "before and after. Never the same as the calibration text.")
        self.labelled = DataChoice("labelled", "Labelled examples (text + label) used to measure accuracy of "
                                   "classification models and to train classifiers.")
        for choice in (self.calibration, self.evaluation_text, self.labelled):
            choice.changed.connect(self._sources_changed)
        self.sources = QFormLayout()
        self.sources.addRow(self._label("Calibration:", self.calibration), self.calibration)
        self.sources.addRow(self._label("Evaluation:", self.evaluation_text), self.evaluation_text)
        self.sources.addRow(self._label("Labelled:", self.labelled), self.labelled)
        self.labels_found = rich_label("")
        self.labels_found.setToolTip("The classes a classifier learns and is measured on: each different value "
                                     "of the label column, with how many examples have it.")
        self.sources.addRow("", self.labels_found)
        self._counted: tuple | None = None
        self.tasks = TaskPicker()
        self.tasks.changed.connect(self.changed)
        # One slot per generated form, so each form replaced by set_specs keeps its place around the tasks.
        self.slots = {name: QVBoxLayout() for name in ("data", "evaluation", "output")}
        self.layout_ = QVBoxLayout(self)
        self.layout_.addLayout(self.sources)
        self.layout_.addLayout(self.slots["data"])
        self.layout_.addLayout(self.slots["evaluation"])
        self.layout_.addWidget(self.tasks)
        self.layout_.addLayout(self.slots["output"])
        self.data_form: ParamForm | None = None
        self.eval_form: ParamForm | None = None
        self.output_form: ParamForm | None = None
        self.set_specs(DataSpec(), EvalSpec())

    @staticmethod
    def _label(text: str, choice: DataChoice) -> QLabel:
        label = QLabel(text)
        label.setToolTip(choice.box.toolTip())
        return label

    def set_specs(self, data: DataSpec, evaluation: EvalSpec, output: OutputSpec | None = None) -> None:
        self.data, self.evaluation = data, evaluation
        self.output = output if output is not None else OutputSpec()
        for choice, value in ((self.calibration, data.calibration), (self.evaluation_text, data.evaluation),
                              (self.labelled, data.labelled)):
            choice.blockSignals(True)
            choice.set_value(value)
            choice.blockSignals(False)
        for form in (self.data_form, self.eval_form, self.output_form):
            if form is not None:
                form.setParent(None)
                form.deleteLater()
        self.data_form = ParamForm(data, DATA_FIELDS, "data: ")
        self.eval_form = ParamForm(evaluation, EVAL_FIELDS, "evaluation: ", EVAL_LABELS)
        self.output_form = ParamForm(self.output, ("dtype",), "output: ", OUTPUT_LABELS)
        for slot, form in zip(self.slots.values(), (self.data_form, self.eval_form, self.output_form), strict=True):
            form.layout().setContentsMargins(0, 0, 0, 0)
            form.changed.connect(self.changed)
            slot.addWidget(form)
        self.data_form.changed.connect(self.show_labels)
        self.tasks.set_spec(evaluation)
        self.show_labels()
        self.changed.emit()

    def _sources_changed(self) -> None:
        self.data.calibration = self.calibration.value()
        self.data.evaluation = self.evaluation_text.value()
        self.data.labelled = self.labelled.value()
        self.show_labels()
        self.changed.emit()

    def show_labels(self) -> None:
        """Show the labels of the chosen labelled data (read again only when the file or columns change)."""
        key = (self.data.labelled, self.data.text_column, self.data.label_column)
        if key == self._counted:
            return
        self._counted = key
        if not self.data.labelled:
            self.labels_found.setText("")
            return
        try:
            counts = label_counts(*key)
        except StudioError as exc:
            self.labels_found.setText(f"<span style='color:#b35900'>{escape(str(exc), quote=False)}</span>")
            return
        except OSError as exc:
            self.labels_found.setText(f"<span style='color:#b35900'>Cannot read it: {escape(str(exc), quote=False)}</span>")
            return
        classes = ", ".join(f"{escape(name)} {count:,}" for name, count in counts.items())
        text = f"{len(counts)} labels found ({sum(counts.values()):,} examples): {classes}."
        for warning in label_warnings(counts):
            text += f"<br><span style='color:#b35900'>⚠ {escape(warning, quote=False)}</span>"
        self.labels_found.setText(text)

    def errors(self) -> list[str]:
        return [e for e in (self.data_form.check(), self.eval_form.check(), self.tasks.error(),
                            self.output_form.check()) if e]
