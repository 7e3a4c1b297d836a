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


class DiskFullError(StudioError):
    """A write failed because the disk (or the person's quota) is full; nothing half-written was kept."""


_DISK_FULL_ERRNOS = {28, 122}  # ENOSPC, EDQUOT
_DISK_FULL_WORDS = ("no space left", "storagefull", "os error 28", "disk quota exceeded", "quotaexceeded")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError, or a library's wrapper around one) says the disk is full."""
    while exc is not None:
        if getattr(exc, "errno", None) in _DISK_FULL_ERRNOS:
            return True
        text = str(exc).lower()
        if any(word in text or word in text.replace(" ", "") for word in _DISK_FULL_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def write_error(exc: BaseException, where: object, doing: str) -> StudioError:
    """One line for a failed write while ``doing`` (e.g. "saving") into ``where``: disk full, no permission…"""
    if isinstance(exc, StudioError):
        return exc
    if is_disk_full(exc) or _nearly_no_space(where):
        return DiskFullError(f"the disk holding {where} is full, so {doing} stopped and nothing half-written "
                             "was kept: free some space or choose a place on another disk, then try again")
    text = str(exc).strip()
    reason = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)
    return StudioError(f"{doing} into {where} failed ({reason}); nothing half-written was kept: check that you "
                       "can write there and try again")


def _nearly_no_space(where: object) -> bool:
    """Whether the disk holding ``where`` is (all but) full: some writers report a short write without an errno
    (numpy's ``tofile``: "4096 requested and 352 written")."""
    import shutil
    from pathlib import Path

    path = Path(str(where))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free < 1 << 20
    except OSError:
        return False
