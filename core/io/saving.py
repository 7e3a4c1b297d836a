"""Saving a model atomically as a folder that plain ``transformers`` loads.

Everything is written into a hidden temporary folder next to the destination and renamed into
place only when complete, so a cancelled, failed or killed save never leaves a half-written
output.  Where an output may go and what it may replace is decided in :mod:`core.io.output_rules`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.errors import is_disk_full, write_error
from core.io.output_rules import Input, OutputError, check_output_dir, check_replaceable_folder, resolved
from core.models.formats import get_format, model_format, write_manifest
from core.partials import aside_path, journaled, ordinary_permissions, partial_path


@contextmanager
def atomic_folder(output_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``output_dir``, on any error it is deleted.

    An existing ``output_dir`` is replaced only with ``overwrite`` and only if it is still an earlier
    result of this app (checked again here, just before the rename).  A failed write (a full disk)
    becomes one :class:`OutputError` line; the hidden partial folder is noted in the leftovers journal
    so that a process killed mid-save is cleaned up at the next start.
    """
    output = resolved(output_dir)
    partial = partial_path(output)
    with journaled(partial):
        try:
            partial.mkdir(parents=True)
            yield partial
            ordinary_permissions(partial)
            if output.exists() and (not output.is_dir() or any(output.iterdir())):
                if not output.is_dir():
                    raise OutputError(f"{output} appeared as a file while saving; nothing was overwritten")
                check_replaceable_folder(output, overwrite)
                _replace_folder(partial, output)
            else:
                if output.is_dir():
                    output.rmdir()  # an empty folder (e.g. made by the person to hold the result)
                os.replace(partial, output)
        except Exception as exc:  # a full disk reaches us as OSError or as a library's own error type
            if isinstance(exc, OSError) or is_disk_full(exc):
                raise write_error(exc, output, "saving") from exc
            raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)


def _replace_folder(partial: Path, output: Path) -> None:
    """Swap ``partial`` in for the earlier result ``output``; a kill between the renames is undone later."""
    aside = aside_path(output)
    with journaled(aside, restore_to=output):
        os.replace(output, aside)
        try:
            os.replace(partial, output)
        except BaseException:
            os.replace(aside, output)  # the earlier result goes back where it was
            raise
        shutil.rmtree(aside, ignore_errors=True)


def save_model(model: Any, tokenizer: Any, output_dir: str | Path, *, recipe_yaml: str | None = None,
               report: dict[str, Any] | None = None, overwrite: bool = False,
               source_path: str | Path | None = None) -> Path:
    """Write model (safetensors), tokenizer, ``recipe.yaml`` and ``report.json`` atomically."""
    output = check_output_dir(output_dir, [Input(Path(source_path), "the source model") if source_path else None],
                              overwrite)
    with atomic_folder(output, overwrite) as folder:
        write_model_files(folder, model, tokenizer)
        write_run_files(folder, recipe_yaml, report)
    return output


def write_model_files(folder: Path, model: Any, tokenizer: Any) -> None:
    """Weights (safetensors), config, generation config and tokenizer; compressed formats write a manifest."""
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
