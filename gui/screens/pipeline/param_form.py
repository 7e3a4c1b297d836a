"""A form generated from a config dataclass's ``param_specs``: one control per field.

Numbers get spin boxes limited to their valid range (an exclusive bound is left out; a typed number
outside the range is explained in a red line under the box and the value is kept), choices a drop-down, switches a check box,
lists a comma-separated text field.  Every control's tooltip is the field's help text plus what
is allowed.  Expert fields (``param(..., expert=True)``) sit under a fold, "Advanced", closed until it is
clicked, whose title counts the settings changed from their defaults.  Edits are written straight back
into the config object; the whole config is then checked with ``core.engine.params.validate_config``
and any problem is shown under the form.
"""

from __future__ import annotations

import re
import typing
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QWidget,
)

from core.engine.params import ParamSpec, param_specs, validate_config
from core.errors import RecipeError
from gui.screens.pipeline.range_spin import RangeDoubleSpinBox, RangeSpinBox, spin_limits

ERROR_STYLE = "color: #d32f2f;"
DECIMALS = 4
ADVANCED = "Advanced"
ADVANCED_NOTE = "Safe defaults; change them only if you know why."


def base_type(spec: ParamSpec) -> tuple[Any, bool]:
    """(the field's plain type, whether it may be None) for ``int``, ``float | None``, ``list`` …"""
    args = typing.get_args(spec.type)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), spec.type) if optional else spec.type
    return typing.get_origin(base) or base, optional


def tooltip_for(spec: ParamSpec) -> str:
    allowed = spec.range_text()
    default = ", ".join(map(str, spec.default)) if isinstance(spec.default, list) else spec.default
    parts = [spec.help, f"Allowed: {allowed}." if allowed != "any value" else "", f"Default: {default}."]
    return "\n".join(p for p in parts if p)


def _list_text(value: Any) -> str:
    return ", ".join(str(v) for v in (value or []))


def _parse_number(text: str, kind: type) -> Any:
    text = text.strip()
    return None if not text else kind(text)


class ParamForm(QWidget):
    """Edits ``config`` in place; ``changed`` fires after every edit, ``error`` is '' when valid."""

    changed = Signal()

    def __init__(self, config: Any, fields: typing.Iterable[str] | None = None, where: str = "",
                 labels: dict[str, str] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.config = config
        self.where = where
        wanted = None if fields is None else list(fields)
        self.specs = [s for s in param_specs(type(config)) if wanted is None or s.name in wanted]
        if wanted is not None:
            self.specs.sort(key=lambda s: wanted.index(s.name))
        self.editors: dict[str, QWidget] = {}
        self.range_notes: dict[str, QLabel] = {}  # number fields: the red line under the box
        self._note_layouts: dict[str, QFormLayout] = {}
        self.error = ""
        layout = self._layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        everyday = [s for s in self.specs if not s.expert]
        expert = [s for s in self.specs if s.expert]
        for spec in everyday:
            self._add_field(layout, spec, labels)
        self.advanced_button = QToolButton()
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setAutoRaise(True)
        self.advanced_button.setToolTip("Settings for people who know the method. Their defaults are safe: the "
                                        "result is good without touching them. Click to show or hide them.")
        self.advanced = QWidget()  # the fold's contents: the note, then the expert fields
        advanced_layout = QFormLayout(self.advanced)
        advanced_layout.setContentsMargins(12, 0, 0, 0)
        advanced_layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.advanced_note = QLabel(ADVANCED_NOTE)
        self.advanced_note.setWordWrap(True)
        self.advanced_note.setStyleSheet("color: palette(placeholder-text);")
        advanced_layout.addRow(self.advanced_note)
        for spec in expert:
            self._add_field(advanced_layout, spec, labels)
        layout.addRow(self.advanced_button)
        layout.addRow(self.advanced)
        self.advanced_button.toggled.connect(self.set_advanced_open)
        self.set_advanced_open(False)
        layout.setRowVisible(self.advanced_button, bool(expert))
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.setToolTip("What is wrong with the values above. The run will not start until it is fixed.")
        self.error_label.hide()
        layout.addRow(self.error_label)
        self.check()

    def _add_field(self, layout: QFormLayout, spec: ParamSpec, labels: dict[str, str] | None) -> None:
        editor = self._make_editor(spec)
        editor.setToolTip(tooltip_for(spec))
        self.editors[spec.name] = editor
        label = QLabel(f"{(labels or {}).get(spec.name, spec.label)}:")
        label.setToolTip(editor.toolTip())
        layout.addRow(label, editor)
        if isinstance(editor, RangeSpinBox | RangeDoubleSpinBox):
            self._add_range_note(layout, spec, editor)

    # -- the "Advanced" fold -----------------------------------------------------------------------
    @property
    def expert_fields(self) -> list[str]:
        return [s.name for s in self.specs if s.expert]

    @property
    def advanced_open(self) -> bool:
        return self.advanced_button.isChecked()

    def set_advanced_open(self, open_: bool) -> None:
        """Open or close the fold (clicking its title does the same)."""
        if self.advanced_button.isChecked() != open_:
            self.advanced_button.setChecked(open_)  # comes back here through toggled
            return
        self.advanced_button.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
        self._layout.setRowVisible(self.advanced, open_ and bool(self.expert_fields))
        self._update_advanced_title()

    def _update_advanced_title(self) -> None:
        changed = [s for s in self.specs if s.expert and getattr(self.config, s.name) != s.default]
        count = f" — {len(changed)} changed from the default{'' if len(changed) == 1 else 's'}" if changed else ""
        self.advanced_button.setText(f"{ADVANCED} ({len(self.expert_fields)}){count}")

    # -- building ------------------------------------------------------------------------------
    def _make_editor(self, spec: ParamSpec) -> QWidget:
        kind, optional = base_type(spec)
        value = getattr(self.config, spec.name)
        name = spec.name
        if spec.choices:
            box = QComboBox()
            for choice in spec.choices:
                box.addItem(str(choice), choice)
            box.setCurrentIndex(max(0, box.findData(value)))
            box.currentIndexChanged.connect(lambda _i, b=box, n=name: self._set(n, b.currentData()))
            return box
        if kind is bool:
            check = QCheckBox()
            check.setChecked(bool(value))
            check.toggled.connect(lambda on, n=name: self._set(n, on))
            return check
        if kind in (int, float) and not optional:
            return self._make_spin(spec, kind, value)
        line = QLineEdit(_list_text(value) if kind in (list, tuple) else ("" if value is None else str(value)))
        if kind in (list, tuple):
            line.setPlaceholderText("comma-separated")
            line.editingFinished.connect(lambda n=name, e=line: self._set_text(n, e.text(), list))
        else:
            if optional:
                line.setPlaceholderText("empty = automatic")
            line.editingFinished.connect(lambda n=name, e=line, k=kind: self._set_text(n, e.text(), k))
        return line

    def _make_spin(self, spec: ParamSpec, kind: type, value: Any) -> QWidget:
        low, high = spin_limits(spec, kind, DECIMALS)
        if kind is int:
            spin: QSpinBox | QDoubleSpinBox = RangeSpinBox()
        else:
            spin = RangeDoubleSpinBox()
            spin.setDecimals(DECIMALS)
            spin.setSingleStep(0.05 if high - low <= 1 else 0.1 if high - low <= 10 else 1.0)
        spin.setRange(low, high)
        spin.setKeyboardTracking(False)  # write back when the user finishes a number, not per key
        spin.setValue(value)
        spin.valueChanged.connect(lambda v, n=spec.name: self._set(n, v))
        return spin

    def _add_range_note(self, layout: QFormLayout, spec: ParamSpec, spin: RangeSpinBox | RangeDoubleSpinBox) -> None:
        note = QLabel()
        note.setWordWrap(True)
        note.setStyleSheet(ERROR_STYLE)
        note.setToolTip("The number typed above is not allowed; the setting keeps its value until you type "
                        "one inside the range.")
        layout.addRow(note)
        layout.setRowVisible(note, False)
        self.range_notes[spec.name] = note
        self._note_layouts[spec.name] = layout
        spin.out_of_range.connect(lambda typed, s=spec: self._show_range_note(s, typed))
        spin.valueChanged.connect(lambda _v, n=spec.name: layout.setRowVisible(self.range_notes[n], False))

    def _show_range_note(self, spec: ParamSpec, typed: str) -> None:
        note = self.range_notes[spec.name]
        if typed:
            note.setText(f"⚠ {typed} is outside the allowed range ({spec.range_text()}): "
                         f"the setting stays {getattr(self.config, spec.name)}.")
        self._note_layouts[spec.name].setRowVisible(note, bool(typed))

    # -- writing back --------------------------------------------------------------------------
    def _set(self, name: str, value: Any) -> None:
        setattr(self.config, name, value)
        self._update_advanced_title()
        self.check()
        self.changed.emit()

    def _set_text(self, name: str, text: str, kind: type) -> None:
        try:
            if kind is list:
                value: Any = [v.strip() for v in text.split(",") if v.strip()]
            elif kind in (int, float):
                value = _parse_number(text, kind)
            else:
                value = text
        except ValueError:
            self._show_error(f"{name} must be a {'whole ' if kind is int else ''}number, got {text!r}")
            return
        if getattr(self.config, name) != value:
            self._set(name, value)

    def set_value(self, name: str, value: Any) -> None:
        """Set a field as if the user had typed it (tests and presets use this)."""
        editor = self.editors[name]
        if isinstance(editor, QSpinBox | QDoubleSpinBox):
            editor.setValue(value)
        elif isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, QComboBox):
            editor.setCurrentIndex(editor.findData(value))
        else:
            editor.setText(_list_text(value) if isinstance(value, list) else str(value))
            editor.editingFinished.emit()

    # -- validation ------------------------------------------------------------------------------
    def check(self) -> str:
        """Validate the whole config; show and return the problem ('' when valid)."""
        try:
            validate_config(self.config, self.where)
        except RecipeError as exc:
            self._show_error(str(exc))
        else:
            self._show_error("")
        return self.error

    def _show_error(self, text: str) -> None:
        if text and any(re.search(rf"\b{re.escape(name)}\b", text) for name in self.expert_fields):
            self.set_advanced_open(True)  # never leave a problem with a setting hidden in the closed fold
        self.error = text
        self.error_label.setText(f"⚠ {text[0].upper()}{text[1:]}" if text else "")
        self.error_label.setVisible(bool(text))
