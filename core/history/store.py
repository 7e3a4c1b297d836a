"""The run history: every run the CLI or the app starts, kept in a local SQLite database.

``recorded_run`` wraps :func:`core.engine.runner.run_recipe`: it inserts a ``running`` row before any
work, then marks it ``done`` (with a summary of the measured numbers), ``failed`` (with the
message) or ``cancelled``.  A process killed outright (``kill -9``, a power cut) cannot do that,
so every :class:`History` that opens the database first turns the ``running`` rows whose process
is gone into ``interrupted`` and clears what their save left behind (see
:mod:`core.history.recovery`).

The database lives in the app's data folder (``core.paths``).  It is opened in WAL mode and every
operation is one short transaction on its own connection, so the app's window, its worker thread
and a CLI run may use it at the same time.  A damaged file is moved aside and a new one started;
:attr:`History.notice` says so in plain words.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.engine.recipe import recipe_from_text
from core.errors import RunCancelled, StudioError
from core.events import Log
from core.history.recovery import host_name, process_alive, process_start_time, recover_interrupted
from core.history.summary import summarize_report
from core.paths import data_dir

SCHEMA_VERSION = 1
STATUSES = ("running", "done", "failed", "cancelled", "interrupted")
FILE_NAME = "history.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled', 'interrupted')),
    recipe_name TEXT NOT NULL DEFAULT '',
    recipe_yaml TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    task TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT '',
    output TEXT NOT NULL DEFAULT '',
    metrics TEXT NOT NULL DEFAULT '{}',
    message TEXT NOT NULL DEFAULT '',
    origin TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    process_started REAL,
    host TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
"""


class HistoryError(StudioError):
    """The run history cannot be read or written."""


def history_path() -> Path:
    """Where the history database lives (under the app's data folder)."""
    return data_dir() / FILE_NAME


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class RunRecord:
    """One row of the history."""

    id: int
    started: str
    finished: str | None
    status: str
    recipe_name: str
    recipe_yaml: str
    source: str
    task: str
    device: str
    output: str
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    origin: str = ""
    pid: int | None = None
    process_started: float | None = None
    host: str = ""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        values = dict(row)
        try:
            values["metrics"] = json.loads(values.get("metrics") or "{}")
        except ValueError:
            values["metrics"] = {}
        return cls(**values)

    def metric(self, name: str) -> float | None:
        value = self.metrics.get(name)
        return float(value) if isinstance(value, int | float) else None

    def recipe(self):
        """The recipe this run used, parsed again (raises RecipeError if it no longer validates)."""
        return recipe_from_text(self.recipe_yaml)


class History:
    """The run history database; every method is one short transaction on its own connection.

    Opening it (``History()``) creates the file if needed, moves a damaged file aside, and marks
    the runs of processes that no longer exist as ``interrupted`` (``recover=False`` skips that).
    """

    def __init__(self, path: str | Path | None = None, recover: bool = True):
        self.path = Path(path) if path is not None else history_path()
        self.notice: str | None = None  # a plain-words note for the user (a damaged file was replaced)
        self.recovered: list[int] = []  # ids marked interrupted (or found finished) when opening
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryError(f"cannot create the folder {self.path.parent} for the run history ({exc}); "
                               "check its permissions or set COMPRESSION_STUDIO_HOME to a folder you own") from exc
        self._open_schema()
        if recover:
            self.recovered = recover_interrupted(self)

    # -- connections and schema ----------------------------------------------------------------
    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A fresh connection; with ``write`` one IMMEDIATE transaction, committed on success."""
        conn = sqlite3.connect(self.path, timeout=15.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout = 15000")
            if write:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                yield conn
        finally:
            conn.close()

    def _open_schema(self) -> None:
        try:
            self._create_or_migrate()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise HistoryError(f"the run history {self.path} is busy (locked by another program); "
                                   "try again in a moment") from exc
            aside = self._move_aside()
            self.notice = (f"The run history file was damaged ({exc}). It was moved to {aside} and a new, "
                           "empty history was started; your model folders were not touched.")
            self._create_or_migrate()

    def _create_or_migrate(self) -> None:
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise HistoryError(f"the run history {self.path} was written by a newer version of the app "
                                   f"(schema {version}, this one knows {SCHEMA_VERSION}); update the app")
            if version < SCHEMA_VERSION:
                # version 0 -> 1 in one transaction; later versions add their ALTERs here
                conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;")

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        return aside

    # -- rows ----------------------------------------------------------------------------------
    def start_run(self, recipe: Any, output: str | Path, device: str = "", origin: str = "",
                  pid: int | None = None) -> int:
        """Insert a ``running`` row for this process and return its id."""
        pid = os.getpid() if pid is None else pid
        with self.connect(write=True) as conn:
            steps = json.dumps({"steps": [step.technique for _, step in recipe.enabled_steps()]})
            cursor = conn.execute(
                "INSERT INTO runs (started, status, recipe_name, recipe_yaml, source, task, device, output, "
                "metrics, origin, pid, process_started, host) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now_iso(), recipe.name, recipe.to_yaml(), recipe.model.source, recipe.model.task, device,
                 str(output), steps, origin, pid, process_start_time(pid), host_name()))
            return int(cursor.lastrowid)

    def finish_run(self, run_id: int, status: str, metrics: dict[str, Any] | None = None,
                   message: str = "") -> None:
        """Set a run's final status (and its numbers or the reason it stopped; without ``metrics`` the
        ones recorded at the start, the list of steps, stay).  A cancelled run keeps no output path."""
        if status not in STATUSES or status == "running":
            raise ValueError(f"not a final status: {status!r}")
        with self.connect(write=True) as conn:
            if status == "cancelled":  # it wrote nothing: no output folder to point at
                conn.execute("UPDATE runs SET output = '' WHERE id = ?", (run_id,))
            if metrics is None:
                conn.execute("UPDATE runs SET status = ?, finished = ?, message = ? WHERE id = ?",
                             (status, now_iso(), message, run_id))
            else:
                conn.execute("UPDATE runs SET status = ?, finished = ?, metrics = ?, message = ? WHERE id = ?",
                             (status, now_iso(), json.dumps(metrics, default=float), message, run_id))

    def runs(self, status: str | None = None) -> list[RunRecord]:
        """All runs, newest first (optionally only those with ``status``)."""
        query, args = "SELECT * FROM runs", ()
        if status is not None:
            query, args = query + " WHERE status = ?", (status,)
        with self.connect() as conn:
            rows = conn.execute(query + " ORDER BY id DESC", args).fetchall()
        return [RunRecord.from_row(row) for row in rows]

    def get(self, run_id: int) -> RunRecord | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return RunRecord.from_row(row) if row is not None else None

    def delete(self, run_id: int) -> None:
        """Forget a run (its output folder, if any, is left alone; see ``core.history.recovery.delete_output``)."""
        record = self.get(run_id)
        if record is not None and record.status == "running":
            if process_alive(record):
                raise HistoryError(f"run #{run_id} is still running; cancel it before deleting it")
        with self.connect(write=True) as conn:
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))


def _finish_quietly(history: History, run_id: int, status: str, **kwargs: Any) -> None:
    try:
        history.finish_run(run_id, status, **kwargs)
    except (sqlite3.Error, OSError):  # never let the record hide the run's own outcome
        pass


def recorded_run(recipe: Any, output_dir: str | Path, *, overwrite: bool = False, device: str = "cpu",
                 origin: str = "", history: History | None = None, **options: Any) -> Generator[Any, None, dict]:
    """:func:`core.engine.runner.run_recipe`, recorded in the run history; yields its events, returns its report.

    ``origin`` says who started it ("cli", "app"); other keyword ``options`` go to ``run_recipe``.
    If the history cannot be opened the run still happens, with a warning in the log.
    """
    # lazy: the History screen reads the database without loading torch (the runner imports it)
    from core.engine.runner import check_run, run_recipe

    output = Path(output_dir).expanduser().resolve()
    # A run refused before any work (a bad output folder, a missing data file) is not recorded: the
    # person gets the reason at once and nothing happened worth remembering.
    check_run(recipe, output, overwrite=overwrite, device=device, recipe_file=options.get("recipe_file"))
    try:
        history = history if history is not None else History()
        run_id = history.start_run(recipe, output, device=device, origin=origin)
    except (HistoryError, sqlite3.Error, OSError) as exc:
        yield Log(f"This run is not being recorded in the history: {exc}", level="warning")
        return (yield from run_recipe(recipe, output, overwrite=overwrite, device=device, **options))
    if history.notice:
        yield Log(history.notice, level="warning")
    yield Log(f"Recorded in the run history as run #{run_id}.")
    try:
        report = yield from run_recipe(recipe, output, overwrite=overwrite, device=device, **options)
    except (GeneratorExit, RunCancelled, KeyboardInterrupt):
        _finish_quietly(history, run_id, "cancelled", message="Cancelled before the end; nothing was written.")
        raise
    except BaseException as exc:
        _finish_quietly(history, run_id, "failed", message=f"{exc}" or type(exc).__name__)
        raise
    _finish_quietly(history, run_id, "done", metrics=summarize_report(report))
    return report
