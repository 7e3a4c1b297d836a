"""Number boxes that honour a parameter's range exactly, and say so when a typed value is outside it.

Qt's spin boxes refuse the keystroke that would leave the range: typing 1.5 in a box limited to 1
leaves "1." and silently becomes 1.0.  These boxes accept such text while it is typed, emit
``out_of_range`` with it (so the form can say what is allowed), and on Enter or leaving the box keep
the previous value (Qt's ``CorrectToPreviousValue``) instead of clamping to some other number.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox

BIG = 1e12
INT_LIMIT = 2**31 - 1


def spin_limits(spec: Any, kind: type, decimals: int = 4) -> tuple[float, float]:
    """(lowest, highest) value a box may hold for a ``ParamSpec``: an exclusive bound is left out by one
    whole number (``int``) or by the smallest step the box shows (``float``, ``decimals`` places)."""
    step = 1 if kind is int else 10.0 ** -decimals
    limit = INT_LIMIT if kind is int else BIG
    low = -limit if spec.minimum is None else spec.minimum + (step if spec.exclusive_minimum else 0)
    high = limit if spec.maximum is None else spec.maximum - (step if spec.exclusive_maximum else 0)
    if kind is int:
        return max(-INT_LIMIT, int(low)), min(INT_LIMIT, int(high))
    return float(low), float(high)


def _state(result: Any) -> QValidator.State:
    return result[0] if isinstance(result, tuple) else result


class _RangeCheck:
    """What both boxes share: judge typed text, report a number outside the range."""

    def _number(self, text: str) -> float | None:
        raise NotImplementedError

    def _judge(self, result: Any, text: str, pos: int) -> Any:
        state = _state(result)
        typed = text.strip()
        if state == QValidator.State.Invalid:
            number = self._number(typed)
            if number is not None and not self.minimum() <= number <= self.maximum():
                self.out_of_range.emit(typed)
                return QValidator.State.Intermediate, text, pos
        elif state == QValidator.State.Acceptable and typed != self.textFromValue(self.value()):
            self.out_of_range.emit("")  # a number inside the range is being typed
        return result


class RangeSpinBox(_RangeCheck, QSpinBox):
    """A whole-number box; ``out_of_range(text)`` while typed text is a number outside the range."""

    out_of_range = Signal(str)

    def _number(self, text: str) -> float | None:
        value, ok = self.locale().toInt(text)
        return float(value) if ok else None

    def validate(self, text: str, pos: int) -> Any:  # noqa: D102 (Qt override)
        return self._judge(super().validate(text, pos), text, pos)


class RangeDoubleSpinBox(_RangeCheck, QDoubleSpinBox):
    """A decimal box; ``out_of_range(text)`` while typed text is a number outside the range."""

    out_of_range = Signal(str)

    def _number(self, text: str) -> float | None:
        value, ok = self.locale().toDouble(text)
        return value if ok else None

    def validate(self, text: str, pos: int) -> Any:  # noqa: D102 (Qt override)
        return self._judge(super().validate(text, pos), text, pos)
