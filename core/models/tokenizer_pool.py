"""Spare parsed tokenizers, so a run does not parse ``tokenizer.json`` while the window waits.

Parsing a fast tokenizer is one Rust call that holds Python's GIL: 70–90 ms for SmolLM2's
49,152-word vocabulary on this project's CPU, which froze the app's window at the start of every
run (bench/bench_ui_stall.py).  The app parses a spare while no compression runs (at start-up for
the preselected model, and after each Model-page load); a run takes that spare instead of parsing,
and gives it back when it ends, for the next run.

A tokenizer is lent to one user at a time: calls with padding or truncation change the Rust
tokenizer's own settings, so two threads must never share one.  Keys include the tokenizer
files' sizes and modification times, so an edited folder is parsed afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "vocab.txt", "merges.txt", "added_tokens.json")
MAX_FOLDERS = 4  # spares for the last few folders only: each holds a few MB

_lock = threading.Lock()
_spares: OrderedDict[tuple, Any] = OrderedDict()


def pool_key(folder: Path, trust_remote_code: bool) -> tuple:
    """What a spare must match: the folder, the remote-code choice and each tokenizer file's size and time."""
    files = []
    for name in TOKENIZER_FILES:
        try:
            stat = (folder / name).stat()
        except OSError:
            continue
        files.append((name, stat.st_size, stat.st_mtime_ns))
    return (str(folder.resolve()), bool(trust_remote_code), tuple(files))


def take(key: tuple) -> Any | None:
    """The spare tokenizer for ``key``, now owned by the caller alone; None if there is none."""
    with _lock:
        return _spares.pop(key, None)


def give(key: tuple, tokenizer: Any) -> None:
    """Hand a tokenizer nobody uses any more to the pool (one spare per folder; the oldest folders go)."""
    with _lock:
        _spares[key] = tokenizer
        _spares.move_to_end(key)
        while len(_spares) > MAX_FOLDERS:
            _spares.popitem(last=False)


def has_spare(key: tuple) -> bool:
    with _lock:
        return key in _spares


def clear() -> None:
    """Drop every spare (tests)."""
    with _lock:
        _spares.clear()
