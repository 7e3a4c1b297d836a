"""Helpers shared by tests (imported as ``tests.helpers``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml


def folder_digest(folder: Path) -> str:
    """A hash of every file's name and bytes: proves a source folder was not modified."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def collect(job):
    """Run a job generator to the end; return (events, result)."""
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            return events, stop.value


def write_recipe(path: Path, model_dir: Path, text_file: Path, **extra) -> Path:
    """A small magnitude-pruning recipe over the tiny model and a local text file."""
    recipe = {
        "version": 1, "name": "tiny test",
        "model": {"source": str(model_dir)},
        "data": {"calibration": str(text_file), "evaluation": str(text_file), "sequence_length": 16,
                 "calibration_windows": 4},
        "evaluation": {"max_windows": 4},
        "steps": [{"technique": "magnitude_prune", "params": {"sparsity": 0.5}}],
    }
    for key, value in extra.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(recipe))
    return path
