"""The original model's measurements, kept so that a second run on the same model does not measure it again.

Measuring the original (perplexity, task accuracy, speed, generated samples) is most of the waiting in a
short run, and it gives the same numbers every time for the same model, data and settings.  The
measurements are kept under the app's data folder, keyed by:

* the model's identity: every file of its source (the .gguf file, or the folder's files) by name, size,
  modification time and a SHA-256 of its first and last 4 MiB (a full hash of a multi-GB model would
  cost more than it saves; any rewrite changes size, time or those bytes);
* the same fingerprint of every data file the measurements read (evaluation text, task files);
* every setting that changes a measurement (the evaluation settings, sequence length, text column, seed,
  task, device) and the versions of this code's measurements, torch and transformers.

A changed file or setting gives a new key, so the original is measured again.  The KL divergence to the
result is not kept: it compares with the result, which is new every run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import transformers

from core.data.samples import bundled_dataset_path
from core.data.task_rows import TASKS, task_file
from core.data.texts import local_path
from core.engine.recipe import Recipe, classifier_reading
from core.errors import StudioError
from core.io.export import write_text_atomic
from core.paths import original_measurements_dir

MEASUREMENT_VERSION = 1  # raise when a measurement's method changes: earlier kept numbers are then ignored
EDGE_BYTES = 4 << 20


def cache_folder() -> Path:
    return original_measurements_dir()


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Name, size, modification time and a hash of the first and last ``EDGE_BYTES`` of one file."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(EDGE_BYTES))
        if stat.st_size > 2 * EDGE_BYTES:
            handle.seek(stat.st_size - EDGE_BYTES)
            digest.update(handle.read(EDGE_BYTES))
    return {"name": path.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "edges": digest.hexdigest()}


def source_fingerprint(path: Path) -> list[dict[str, Any]]:
    """The fingerprints of a file, or of every (non-hidden) file of a folder, in name order."""
    path = Path(path)
    if path.is_file():
        return [file_fingerprint(path)]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".")
                                                                          for part in p.relative_to(path).parts))
    return [{**file_fingerprint(p), "name": str(p.relative_to(path))} for p in files]


def _data_fingerprint(source: str) -> Any:
    """A data source's files' fingerprints (a Hub dataset: its name; its revision is not known here)."""
    if source.startswith("bundled:"):
        path: Path | None = bundled_dataset_path(source.removeprefix("bundled:").strip())
    else:
        path = local_path(source)
    return source_fingerprint(path) if path is not None and path.exists() else source


def measurement_key(recipe: Recipe, source_path: Path, device: str) -> str:
    """The key of the original's measurements for this recipe, model source and device."""
    evaluation = recipe.evaluation
    data = recipe.data
    settings: dict[str, Any] = {
        "version": MEASUREMENT_VERSION, "torch": torch.__version__, "transformers": transformers.__version__,
        "device": device, "task": recipe.model.task, "seed": recipe.seed, "model": source_fingerprint(source_path),
        "sequence_length": data.sequence_length, "text_column": data.text_column,
        "evaluation": {k: v for k, v in vars(evaluation).items() if k != "kl_to_teacher"},
    }
    if evaluation.perplexity and recipe.model.task == "causal-lm":
        settings["evaluation_data"] = _data_fingerprint(data.evaluation)
    if recipe.model.task == "sequence-classification":
        settings["labelled"] = [_data_fingerprint(data.labelled), data.label_column]
        settings["reading"] = list(classifier_reading(recipe))  # the tokens of each text the accuracy reads
    if recipe.model.task == "causal-lm":
        settings["task_files"] = [source_fingerprint(task_file(t) if t in TASKS else Path(t).expanduser())
                                  for t in evaluation.tasks]
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_measurements(key: str) -> dict[str, Any] | None:
    """The kept measurements for ``key`` (with ``measured_at``), or None when there are none or they are unreadable."""
    path = cache_folder() / f"{key}.json"
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return kept if isinstance(kept, dict) and isinstance(kept.get("before"), dict) else None


def keep_measurements(key: str, before: dict[str, Any]) -> None:
    """Keep the original's measurements under ``key`` (written atomically; a failure to write is not an error)."""
    payload = {"measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "before": before}
    try:
        cache_folder().mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache_folder() / f"{key}.json", json.dumps(payload))
    except (StudioError, OSError, TypeError, ValueError):  # a full disk or an odd value: measure again next time
        return
