"""The one place where an exception becomes a dialog (ARCHITECTURE pattern 4).

A :class:`core.errors.StudioError` is a problem with the user's input: show its message and
what to do about it.  Anything else is a bug: say so plainly, name the exception, and put the
traceback under "Show Details…" so it can be reported.  Either way the app keeps running.
"""

from __future__ import annotations

import traceback

from PySide6.QtWidgets import QMessageBox, QWidget

from core.errors import DataError, ModelLoadError, RecipeError, RunCancelled, StudioError

_WHAT_TO_DO = (
    (ModelLoadError, "Check the path or name above. Open the folder that holds config.json and the "
                     "weights, or a .gguf file, or use the bundled model, which works offline."),
    (DataError, "Choose another data file, or fix the one named above (it must be UTF-8 text, "
                ".jsonl or .csv with the named column)."),
    (RecipeError, "Change the setting named above to an allowed value, then run again."),
    (RunCancelled, "Nothing was written. Start the run again when you are ready."),
)
_DEFAULT_WHAT_TO_DO = "Follow the advice in the message above, then try again."


def what_to_do(exc: StudioError) -> str:
    for kind, advice in _WHAT_TO_DO:
        if isinstance(exc, kind):
            return advice
    return _DEFAULT_WHAT_TO_DO


def _sentence(text: str) -> str:
    text = text.strip() or "Something went wrong."
    return text[0].upper() + text[1:]


def build_error_box(exc: BaseException, parent: QWidget | None = None, action: str | None = None) -> QMessageBox:
    """The dialog for ``exc``; ``action`` is what the user tried, e.g. "Loading the model"."""
    box = QMessageBox(parent)
    if isinstance(exc, StudioError):
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle(f"{action} failed" if action else "Could not finish")
        box.setText(_sentence(str(exc)))
        box.setInformativeText(f"What to do: {what_to_do(exc)}")
    else:
        box.setIcon(QMessageBox.Icon.Critical)
        box.setWindowTitle("Unexpected error")
        box.setText(f"Unexpected error{f' while {action[0].lower()}{action[1:]}' if action else ''}: "
                    f"{type(exc).__name__}: {exc}")
        box.setInformativeText("This is a bug in Compression Studio, not something you did. The app is "
                               "still running: you can try again. To report it, press Show Details… and copy the text.")
        box.setDetailedText("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    return box


def show_error(exc: BaseException, parent: QWidget | None = None, action: str | None = None) -> QMessageBox:
    """Show the dialog for ``exc`` and return it once the user closed it."""
    box = build_error_box(exc, parent, action)
    box.exec()
    return box
