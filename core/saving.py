"""Saving a model atomically as a folder that plain ``transformers`` loads.

Everything is written into a hidden temporary folder next to the destination and renamed into
place only when complete, so a cancelled, failed or killed save never leaves a half-written
output.  The destination may never be the source model or lie inside it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.errors import StudioError

PARTIAL_MARK = ".partial-"


class OutputError(StudioError):
    """The output folder cannot be written where the user asked."""


def check_output_dir(output_dir: str | Path, source_path: str | Path | None = None, overwrite: bool = False) -> Path:
    """Validate a destination up front: not the source, not inside it, not an existing folder unless allowed."""
    output = Path(output_dir).expanduser().resolve()
    if source_path is not None:
        source = Path(source_path).expanduser().resolve()
        source_folder = source if source.is_dir() else source.parent
        if output == source_folder or source_folder in output.parents or output == source:
            raise OutputError(f"the output {output} would be inside the source model {source_folder}: "
                              "choose another folder so the original stays untouched")
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output} is a file; choose a folder name for the output")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputError(f"{output} already exists and is not empty: choose a new folder or allow overwriting")
    if not output.parent.exists():
        raise OutputError(f"the folder {output.parent} does not exist; create it or choose another place")
    if not os.access(output.parent, os.W_OK):
        raise OutputError(f"cannot write in {output.parent}: choose a folder you own")
    return output


@contextmanager
def atomic_folder(output_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``output_dir``, on any error it is deleted."""
    output = Path(output_dir).resolve()
    partial = output.parent / f".{output.name}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    try:
        yield partial
        if output.exists():
            if not overwrite and any(output.iterdir()):
                raise OutputError(f"{output} appeared while saving; nothing was overwritten")
            old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(output, old)
            os.replace(partial, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def save_model(model: Any, tokenizer: Any, output_dir: str | Path, *, recipe_yaml: str | None = None,
               report: dict[str, Any] | None = None, overwrite: bool = False,
               source_path: str | Path | None = None) -> Path:
    """Write model (safetensors), tokenizer, ``recipe.yaml`` and ``report.json`` atomically."""
    output = check_output_dir(output_dir, source_path, overwrite)
    with atomic_folder(output, overwrite) as folder:
        write_model_files(folder, model, tokenizer)
        write_run_files(folder, recipe_yaml, report)
    return output


def write_model_files(folder: Path, model: Any, tokenizer: Any) -> None:
    """Weights (safetensors), config, generation config and tokenizer; compressed formats write a manifest."""
    from core.formats import get_format, model_format, write_manifest

    mark = model_format(model)
    if mark is None:
        model.save_pretrained(folder)
    else:
        get_format(mark["format"]).save(model, folder)
        write_manifest(folder, mark)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def write_run_files(folder: Path, recipe_yaml: str | None, report: dict[str, Any] | None) -> None:
    """The recipe that made the model and the measured report."""
    if recipe_yaml is not None:
        (folder / "recipe.yaml").write_text(recipe_yaml, encoding="utf-8")
    if report is not None:
        (folder / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Delete leftovers of saves killed mid-way (e.g. by ``kill -9``) in ``folder``; return them."""
    folder = Path(folder)
    stale = [p for p in folder.glob(f".*{PARTIAL_MARK}*") if p.is_dir()] if folder.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale
