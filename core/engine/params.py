"""Typed step parameters: defaults, ranges, choices and help text in one place.

A technique's config is a dataclass whose fields are declared with :func:`param`.  The same
metadata drives validation (a message naming the field and the allowed range), the YAML/JSON
round trip, the CLI, and the GUI's generated forms and tooltips.  ``label`` is the plain-words name
a form shows (the recipe key never changes); ``expert`` marks a setting whose default is safe and that
only someone who knows the method needs to touch: forms put those under a closed "Advanced" fold.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import MISSING
from typing import Any

from core.errors import RecipeError


def param(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
          choices: tuple | None = None, label: str | None = None, exclusive_minimum: bool = False,
          exclusive_maximum: bool = False, expert: bool = False) -> Any:
    """Declare a config field with its valid range or choices and a plain-words explanation
    (``label``: the name a form shows; ``expert``: a safe default few need to change, shown under "Advanced")."""
    meta = {"help": help, "minimum": minimum, "maximum": maximum, "choices": choices, "label": label,
            "exclusive_minimum": exclusive_minimum, "exclusive_maximum": exclusive_maximum, "expert": expert}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """Everything a form or validator needs to know about one field."""

    name: str
    type: Any
    default: Any
    help: str
    label: str
    minimum: float | None
    maximum: float | None
    choices: tuple | None
    exclusive_minimum: bool
    exclusive_maximum: bool
    expert: bool = False  # a safe default few need to change: forms show it under "Advanced"

    def range_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        low = "" if self.minimum is None else f"{self.minimum} {'<' if self.exclusive_minimum else '≤'} "
        high = "" if self.maximum is None else f" {'<' if self.exclusive_maximum else '≤'} {self.maximum}"
        return f"{low}{self.name}{high}" if (low or high) else "any value"


def param_specs(config_cls: type) -> list[ParamSpec]:
    """The fields of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(config_cls)
    specs = []
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        specs.append(ParamSpec(
            name=f.name, type=hints[f.name], default=default, help=meta.get("help", ""),
            label=meta.get("label") or f.name.replace("_", " ").capitalize(),
            minimum=meta.get("minimum"), maximum=meta.get("maximum"), choices=meta.get("choices"),
            exclusive_minimum=meta.get("exclusive_minimum", False),
            exclusive_maximum=meta.get("exclusive_maximum", False), expert=meta.get("expert", False)))
    return specs


def _coerce(spec: ParamSpec, value: Any, where: str) -> Any:
    base = typing.get_origin(spec.type) or spec.type
    args = typing.get_args(spec.type)
    if value is None and type(None) in args:
        return None
    if args and type(None) in args:  # Optional[X]
        base = next(a for a in args if a is not type(None))
        base = typing.get_origin(base) or base
    try:
        if base is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
                return value.lower() in ("true", "yes", "on")
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
            if math.isnan(number):
                raise TypeError
            return number
        if base is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if base in (list, tuple):
            return _coerce_list(spec, value, where)
    except (TypeError, ValueError):
        raise RecipeError(f"{where}{spec.name} must be {getattr(base, '__name__', base)}, got {value!r}") from None
    return value


def _coerce_list(spec: ParamSpec, value: Any, where: str) -> list:
    """A list field: a list (or a comma-separated string), each item of the declared type (``list[str]``)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise TypeError
    declared = spec.type
    if type(None) in typing.get_args(declared):  # Optional[list[X]]
        declared = next(a for a in typing.get_args(declared) if a is not type(None))
    inner = (typing.get_args(declared) or (None,))[0]  # X of list[X]; None for a plain list
    if inner is None:
        return list(value)
    items = []
    for item in value:
        if inner is str and not isinstance(item, str):
            raise RecipeError(f"{where}{spec.name} must be a list of text items, got {item!r} in it")
        if inner is int:
            if isinstance(item, bool) or isinstance(item, float) and not item.is_integer():
                raise RecipeError(f"{where}{spec.name} must be a list of whole numbers, got {item!r} in it")
            try:
                item = int(item)
            except (TypeError, ValueError):
                raise RecipeError(f"{where}{spec.name} must be a list of whole numbers, got {item!r} in it") from None
        items.append(item)
    return items


def check_value(spec: ParamSpec, value: Any, where: str = "") -> None:
    """Raise RecipeError if ``value`` is outside the field's range or choices."""
    bad = False
    if spec.choices is not None and value not in spec.choices:
        bad = True
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and (value < spec.minimum or (spec.exclusive_minimum and value == spec.minimum)):
            bad = True
        if spec.maximum is not None and (value > spec.maximum or (spec.exclusive_maximum and value == spec.maximum)):
            bad = True
    if bad:
        raise RecipeError(f"{where}{spec.name} = {value!r} is not allowed: choose {spec.range_text()}")


def config_from_dict(config_cls: type, values: dict[str, Any] | None, where: str = "") -> Any:
    """Build and validate a config; unknown keys and out-of-range values raise RecipeError."""
    if values is not None and not isinstance(values, dict):
        raise RecipeError(f"{where}expected a mapping of name: value lines (like sparsity: 0.5), got {values!r}")
    values = dict(values or {})
    specs = {s.name: s for s in param_specs(config_cls)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise RecipeError(f"{where}unknown parameter(s) {', '.join(unknown)}; "
                          f"known: {', '.join(specs) or 'none'}")
    kwargs = {name: _coerce(specs[name], value, where) for name, value in values.items()}
    config = config_cls(**kwargs)
    validate_config(config, where)
    return config


def validate_config(config: Any, where: str = "") -> None:
    """Check every field's range, then the config's own cross-field ``validate()`` if it has one."""
    for spec in param_specs(type(config)):
        check_value(spec, getattr(config, spec.name), where)
    extra = getattr(config, "validate", None)
    if callable(extra):
        try:
            extra()
        except RecipeError as exc:
            raise RecipeError(f"{where}{exc}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
