"""Runs whose process died (``kill -9``, a crash, a power cut) and the files they may have left.

A ``running`` row names its process by pid *and* that process's start time, so a pid the system
later gave to another program is not mistaken for the run.  When the process is gone:

* if the output folder exists and its ``report.json`` was written after the run started, the save
  completed and only the final bookkeeping was lost: the row becomes ``done`` with the report's
  numbers;
* otherwise it becomes ``interrupted``.  The runner saves through ``core.io.saving.atomic_folder``, so
  the output folder itself never exists half-written; the hidden ``.<name>.partial-*`` folder a
  killed save leaves next to it is deleted here, and an ``.<name>.old-*`` folder (an overwrite
  killed between its two renames) is put back in place.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import psutil

from core.errors import StudioError
from core.history.summary import summarize_report
from core.partials import ASIDE_MARK, PARTIAL_MARK


def host_name() -> str:
    return socket.gethostname()


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if there is no such process."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent: gone
            return None
        return process.create_time()
    except (psutil.Error, OSError):
        return None


def process_alive(record: Any) -> bool:
    """Whether the process that recorded ``record`` still runs (on another machine: assume it does)."""
    if record.host and record.host != host_name():
        return True
    if record.pid is None:
        return False
    started = process_start_time(record.pid)
    if started is None:
        return False
    return record.process_started is None or abs(started - record.process_started) < 1.0


def _started_epoch(started_iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(started_iso).timestamp()


def _completed_report(output: Path, started_iso: str) -> dict | None:
    report = output / "report.json"
    try:
        if report.is_file() and report.stat().st_mtime >= _started_epoch(started_iso) - 1.0:
            return json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return None


def clean_leftovers(output: Path) -> list[str]:
    """Remove the hidden temporary folders a killed atomic save of ``output`` left; describe what was done."""
    notes: list[str] = []
    parent = output.parent
    if not parent.is_dir():
        return notes
    for partial in parent.glob(f".{output.name}{PARTIAL_MARK}*"):
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
            notes.append(f"removed the unfinished save {partial.name}")
    olds = sorted((p for p in parent.glob(f".{output.name}{ASIDE_MARK}*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if olds and not output.exists():
        try:
            os.replace(olds[-1], output)
            notes.append(f"put the earlier contents of {output.name} back in place")
        except OSError:  # another program settling the same run got there first
            pass
    return notes


def recover_interrupted(history: Any) -> list[int]:
    """Settle the ``running`` rows of dead processes; return their ids."""
    settled: list[int] = []
    running = history.runs(status="running")
    alive_outputs = {r.output for r in running if process_alive(r)}
    for record in running:
        if process_alive(record):
            continue
        output = Path(record.output) if record.output else None
        report = _completed_report(output, record.started) if output is not None else None
        if report is not None:
            history.finish_run(record.id, "done", metrics=summarize_report(report),
                               message="The model was saved, but the program stopped before it could record "
                                       "the end of the run; the numbers come from the saved report.json.")
            settled.append(record.id)
            continue
        notes = []
        if output is not None and record.output not in alive_outputs:
            notes = clean_leftovers(output)
        message = ("The program running this stopped before the end (it was closed, killed or crashed). "
                   "No output was written")
        message += f"; {'; '.join(notes)}." if notes else "."
        history.finish_run(record.id, "interrupted", message=message)
        settled.append(record.id)
    return settled


def folder_size(path: str | Path) -> int:
    """Bytes of every file under ``path`` (0 if it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def delete_output(path: str | Path) -> None:
    """Delete a run's output folder, refusing anything that is not one (no recipe.yaml / report.json)."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir() or path.is_symlink() or not (path / "report.json").is_file():
        raise StudioError(f"{path} does not look like a run's output folder (no report.json), so it was not "
                          "deleted; remove it yourself if you are sure")
    shutil.rmtree(path)
