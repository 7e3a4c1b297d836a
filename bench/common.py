"""Shared bits for benchmarks: peak memory, timing, a plain-text table, and JSON output.

Benchmarks print a table and write JSON under ``bench/results/``; they are not tests.  Numbers
from this noisy machine are only comparable within one run, so scripts measure side by side.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB of 10⁶ bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * 1024 / 1e6 if sys.platform != "darwin" else peak / 1e6


def current_rss_mb() -> float:
    """Resident memory of this process now, in MB of 10⁶ bytes (Linux: /proc/self/statm)."""
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def current_anon_mb() -> float:
    """Anonymous resident memory of this process now (RssAnon: what it allocated itself, without the
    pages of memory-mapped files such as safetensors weights, which the OS can drop and re-read), MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


@contextmanager
def timed(into: dict[str, Any], key: str):
    """Store the wall time of the block in seconds under ``into[key]``."""
    started = time.perf_counter()
    yield
    into[key] = time.perf_counter() - started


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """Print rows as a table; columns are (key, header, format spec)."""
    cells = [[format(row.get(key, ""), spec) if row.get(key) is not None else "—" for key, _, spec in columns]
             for row in rows]
    widths = [max(len(header), *(len(c[i]) for c in cells)) for i, (_, header, _) in enumerate(columns)]
    print("  ".join(header.ljust(w) for (_, header, _), w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def provenance() -> dict[str, Any]:
    """When, where and from which code a result was measured: the date, the machine and the git commit
    (``dirty`` when the code, ``core/`` or ``bench/*.py``, had uncommitted changes)."""
    import os

    import torch
    import transformers

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": git("rev-parse", "--short=10", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "core", "bench/*.py")),
            "machine": {"cpu": cpu or platform.processor(), "cores": os.cpu_count(),
                        "memory_gib": round(memory_gb, 1), "platform": platform.platform(),
                        "python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "cpu_threads": torch.get_num_threads()}}


def write_results(name: str, rows: list[dict[str, Any]], settings: dict[str, Any],
                  started: dict[str, Any] | None = None) -> Path:
    """Write ``bench/results/<name>.json``: the rows, the settings and :func:`provenance`.

    ``started``: the provenance taken when the benchmark began; its commit and ``dirty`` are the code that
    ran (a long benchmark may end after later commits), the date is when the result was written.

    The results of the runs behind the README's tables are committed; ``bench/readme_tables.py``
    writes the tables from them.
    """
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    now = provenance()
    if started is not None:
        now.update(commit=started["commit"], dirty=started["dirty"])
    payload = {**now, "settings": settings, "rows": rows}
    temporary = path.with_suffix(".json.partial")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    temporary.replace(path)
    return path


def apply_step(model: Any, tokenizer: Any, technique: str, params: dict[str, Any], *, sequence_length: int,
               calibration_windows: int, device: str = "cpu") -> tuple[Any, float]:
    """Apply one registered technique to ``model`` outside the runner; return (StepReport, seconds)."""
    from core.engine.params import config_from_dict
    from core.engine.recipe import DataSpec, Recipe
    from core.engine.registry import get_technique
    from core.engine.runner import RunContext
    from core.events import drain

    info = get_technique(technique)
    config = config_from_dict(info.config_cls, params)
    recipe = Recipe(data=DataSpec(sequence_length=sequence_length, calibration_windows=calibration_windows))
    started = time.perf_counter()
    report = drain(info.handler(model, config, RunContext(recipe, tokenizer, device)))
    return report, time.perf_counter() - started


def add_window_arguments(parser: argparse.ArgumentParser, *, calibration: int | None = 32, windows: int = 40,
                         sequence_length: int = 512) -> None:
    """The data options every benchmark takes: calibration windows (None: not used), evaluation windows,
    sequence length (the bundled texts, cut into windows of that many tokens)."""
    if calibration is not None:
        parser.add_argument("--calibration-windows", type=int, default=calibration)
    parser.add_argument("--windows", type=int, default=windows, help="evaluation windows (0 = all)")
    parser.add_argument("--sequence-length", type=int, default=sequence_length)


def run_child(script: str | Path, arguments: list[str], *, python: str | Path = sys.executable,
              timeout: float | None = None, workdir: str | None = None, quiet: bool = False,
              check: bool = False) -> dict[str, Any]:
    """Run ``script`` in a fresh Python process with ``arguments`` plus ``--json-out FILE``; return that JSON.

    Each measurement gets its own process so peak memory and timings of one method never leak into the
    next.  A child that fails, writes nothing or runs past ``timeout`` gives ``{"error": why}`` (with
    ``quiet``, its output is kept for that message instead of shown); with ``check`` it stops the benchmark.
    """
    with tempfile.NamedTemporaryFile(suffix=".json", dir=workdir, delete=False) as out:
        result_path = Path(out.name)
    command = [str(python), str(script), *arguments, "--json-out", str(result_path)]
    try:
        done = subprocess.run(command, capture_output=quiet, text=True, timeout=timeout)
        text = result_path.read_text() if result_path.stat().st_size else ""
        if done.returncode != 0 or not text:
            lines = [ln for ln in ((done.stderr or done.stdout or "") if quiet else "").strip().splitlines()
                     if ln.strip()]
            return {"error": " | ".join(lines[-3:])[-400:] or f"the child process failed (exit {done.returncode})"}
        return json.loads(text)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        result_path.unlink(missing_ok=True)


def run_child_checked(script: str | Path, arguments: list[str], **options: Any) -> dict[str, Any]:
    """:func:`run_child`, stopping the benchmark when the child fails."""
    row = run_child(script, arguments, **options)
    if set(row) == {"error"}:
        raise SystemExit(f"{Path(script).name} {' '.join(arguments)}: {row['error']}")
    return row
