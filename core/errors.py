"""Errors a person can act on.

Every failure that is the user's input (a missing file, a bad value) is raised as a
``StudioError`` whose message is one line that says what happened and what to do.  The CLI
prints it and exits non-zero; the GUI shows it in a dialog.  Anything else is a bug.
"""

from __future__ import annotations


class StudioError(Exception):
    """Base class: a problem with the user's input or environment, with an actionable message."""


class ModelLoadError(StudioError):
    """The model could not be found, read or understood."""


class DataError(StudioError):
    """A dataset file is missing, empty, binary, badly encoded or lacks a column."""


class RecipeError(StudioError):
    """A recipe or a step's parameters are invalid."""


class RunCancelled(StudioError):
    """The user cancelled the run; nothing was written."""
