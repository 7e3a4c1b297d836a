"""Hidden work-in-progress files, and cleaning up the ones a killed process left behind.

Every output is first written under a hidden name next to its destination,
``.<name>.partial-<pid>-<random>``, and renamed into place when complete.  A process killed
outright (``kill -9``, a power cut) cannot delete its partial file or folder, and one can be
hundreds of MB, so each is also noted in a small *journal* in the app's data folder
(``pending/<random>.json``: the path and the writing process).  :func:`sweep_leftovers` runs at the
start of the app and of every command: it deletes the partials whose process is gone, puts back
a folder an overwrite had moved aside and not yet replaced, and forgets the journal entries.

Files written this way get ordinary permissions (:func:`ordinary_permissions`) before the rename.
Only names this module made are ever deleted (they carry :data:`PARTIAL_MARK`), and never one whose
process still runs, so two processes at work side by side do not disturb each other.  Partials in
the GGUF cache are also found by name, in case the journal could not be written (a read-only home).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from core import paths

PARTIAL_MARK = ".partial-"
ASIDE_MARK = ".old-"
JOURNAL_FOLDER = "pending"


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if it no longer runs."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.Error, OSError):
        return None


_OWN_START = _process_start(os.getpid())


def _owner_alive(pid: int, started: float | None) -> bool:
    """Whether the process that wrote a partial still runs (and is not a later one given the same pid)."""
    now = _process_start(pid)
    return now is not None and (started is None or abs(now - started) < 1.0)


def partial_path(target: Path) -> Path:
    """The hidden name a partial of ``target`` is written under, next to it."""
    return target.parent / f".{target.name}{PARTIAL_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def aside_path(target: Path) -> Path:
    """Where an overwrite moves the earlier ``target`` while the new one is renamed into place."""
    return target.parent / f".{target.name}{ASIDE_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _journal_dir() -> Path:
    return paths.data_dir() / JOURNAL_FOLDER


def _note(entry: dict) -> Path | None:
    """Write a journal entry; None when the app's home cannot be written (the work goes on regardless)."""
    folder = _journal_dir()
    note = folder / f"{uuid.uuid4().hex}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{note.name}.tmp"
        tmp.write_text(json.dumps({**entry, "pid": os.getpid(), "started": _OWN_START}), encoding="utf-8")
        os.replace(tmp, note)
    except OSError:
        return None
    return note


def _forget(note: Path | None) -> None:
    if note is not None:
        try:
            note.unlink(missing_ok=True)
        except OSError:
            pass


@contextmanager
def journaled(path: Path, restore_to: Path | None = None) -> Iterator[Path]:
    """Note ``path`` (a partial, or with ``restore_to`` a folder moved aside) in the journal while the
    block runs, so a killed process's leftover is found and cleaned by the next :func:`sweep_leftovers`."""
    note = _note({"path": str(path), "restore_to": str(restore_to) if restore_to else None})
    try:
        yield path
    finally:
        _forget(note)


def _umask() -> int:
    """The process's file-creation mask, read without changing it (Linux), else the usual 022."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def ordinary_permissions(path: Path) -> None:
    """Give every file under ``path`` the permissions a plainly created file gets (0666 less the umask).

    Some writers (safetensors via a temporary file) create ``rw-------`` files; a saved model's
    files should all be readable alike.
    """
    mode = 0o666 & ~_umask()
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    for file in files:
        if file.stat().st_mode & 0o777 != mode:
            os.chmod(file, mode)


def remove_path(path: Path) -> None:
    """Delete a file or a folder, whichever ``path`` is; a missing one is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _settle(entry: dict) -> str | None:
    """Clean up after one journal entry of a dead process; describe what was done."""
    path = Path(str(entry.get("path") or ""))
    restore_to = entry.get("restore_to")
    if not path.name or not (PARTIAL_MARK in path.name or ASIDE_MARK in path.name):
        return None  # not a name this module made: never delete it
    if not path.exists() and not path.is_symlink():
        return None
    if restore_to and not Path(restore_to).exists():
        try:
            os.replace(path, restore_to)
            return f"put the earlier {Path(restore_to).name} back in place"
        except OSError:
            return None
    remove_path(path)
    return f"removed the unfinished {path.name}"


def _written_by_live_process(partial: Path) -> bool:
    """Whether the pid in a partial's name (``...partial-<pid>-<random>``) is a process that still runs and
    started before the partial was last written (so not a later program given the same pid)."""
    tail = partial.name.rsplit(PARTIAL_MARK, 1)[-1]
    head = tail.split("-", 1)[0]
    if not (head.isdigit() and "-" in tail):
        return False  # an older name without a pid: its writer is long gone
    started = _process_start(int(head))
    try:
        return started is not None and started <= partial.lstat().st_mtime + 1.0
    except OSError:
        return False


def sweep_leftovers() -> list[str]:
    """Remove what killed processes left half-written; return one note per thing cleaned.

    Cheap (a folder listing), safe to call at any start, and silent when the home cannot be written.
    """
    notes: list[str] = []
    folder = _journal_dir()
    try:
        entries = sorted(folder.glob("*.json")) if folder.is_dir() else []
    except OSError:
        entries = []
    for note in entries:
        try:
            entry = json.loads(note.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entry = None
        if isinstance(entry, dict) and _owner_alive(int(entry.get("pid") or 0), entry.get("started")):
            continue
        if isinstance(entry, dict):
            done = _settle(entry)
            if done:
                notes.append(done)
        _forget(note)
    notes.extend(_sweep_gguf_cache())
    return notes


def _sweep_gguf_cache() -> list[str]:
    """Partials of GGUF conversions in the cache whose process is gone (found by name, no journal needed)."""
    notes: list[str] = []
    cache = paths.cache_dir() / "gguf"
    try:
        partials = list(cache.glob(f".*{PARTIAL_MARK}*")) if cache.is_dir() else []
    except OSError:
        return notes
    for partial in partials:
        if _written_by_live_process(partial):
            continue
        remove_path(partial)
        notes.append(f"removed the unfinished conversion {partial.name}")
    return notes
