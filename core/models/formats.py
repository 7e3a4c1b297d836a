"""Saved formats beyond plain transformers: the extension point for techniques that replace modules.

Most results save with ``save_pretrained`` and load in plain ``transformers``.  A technique whose
modules transformers does not know (packed low-bit weights, factorized Linears, shared layers)
registers a :class:`SavedFormat` and marks the model with :func:`mark_format`.  Saving then calls the
format's ``save``; the folder gets a ``compression_studio.json`` manifest naming the format; our
loader (``core.models.loading``) sees the manifest and calls the format's ``load``.  Whether plain
transformers can also load the folder is part of the format, so the app can say so honestly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ModelLoadError, StudioError
from core.techniques import load_all

MANIFEST = "compression_studio.json"
MANIFEST_VERSION = 1
_FORMAT_ATTRIBUTE = "_compression_studio_format"


@dataclass(frozen=True)
class SavedFormat:
    """How to write and read back one kind of compressed model folder."""

    name: str
    description: str
    save: Callable[[Any, Path], None]  # (model, folder): write weights + config into folder
    load: Callable[[Path, str], Any]  # (folder, task) -> model, compressed modules intact and re-marked
    plain_transformers: bool = False  # True if AutoModel*.from_pretrained also loads the folder
    notes: list[str] = field(default_factory=list)
    # True when the model's modules are still ordinary ones and the format is only a way of storing them
    # (e.g. sparse bitmasks): a later step's format may take over.  False when modules were replaced.
    replaceable: bool = False


_FORMATS: dict[str, SavedFormat] = {}


def register_format(saved_format: SavedFormat) -> SavedFormat:
    """Make a format known to the loader and the saver (call at import time of the technique)."""
    _FORMATS[saved_format.name] = saved_format
    return saved_format


def get_format(name: str) -> SavedFormat:
    if name not in _FORMATS:
        load_all()  # importing the techniques registers their formats
    if name not in _FORMATS:
        raise ModelLoadError(f"this folder was saved in the format {name!r}, which this version of the app "
                             f"does not know (known: {', '.join(sorted(_FORMATS)) or 'none'}); update the app")
    return _FORMATS[name]


_LOAD_FIXES: dict[str, Callable[[Any], None]] = {}


def register_load_fix(quant_method: str, fix: Callable[[Any], None]) -> None:
    """Have the loader call ``fix(model)`` on every model transformers loads with this ``quant_method``
    (a technique that saves through transformers' own quantizer, e.g. bitsandbytes, registers one)."""
    _LOAD_FIXES[quant_method] = fix


def quant_method(model: Any) -> str | None:
    """The ``quant_method`` of transformers' quantization config on ``model``, or None."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    method = config.get("quant_method") if isinstance(config, dict) else getattr(config, "quant_method", None)
    return str(getattr(method, "value", method)) if method is not None else None


def apply_load_fixes(model: Any) -> None:
    """Run the fix a technique registered for ``model``'s quantization method, if any."""
    method = quant_method(model)
    if method is None:
        return
    if method not in _LOAD_FIXES:
        load_all()
    fix = _LOAD_FIXES.get(method)
    if fix is not None:
        fix(model)


def mark_format(model: Any, name: str, **details: Any) -> None:
    """Record on the model that it must be saved in format ``name`` (with details for the manifest).

    Two steps that both replace modules (say low-rank factors, then shared layers) cannot be saved
    together yet: that is refused here, before anything is written.
    """
    current = model_format(model)
    if current and current["format"] != name and not get_format(current["format"]).replaceable:
        raise StudioError(f"this recipe combines two steps that each need their own saved format "
                          f"({current['format']} and {name}); this version can save only one of them. "
                          "Split the recipe into two runs, or leave one step out.")
    setattr(model, _FORMAT_ATTRIBUTE, {"format": name, **details})


def model_format(model: Any) -> dict[str, Any] | None:
    """The format mark set by :func:`mark_format`, or None for a plain transformers model."""
    return getattr(model, _FORMAT_ATTRIBUTE, None)


def write_manifest(folder: Path, mark: dict[str, Any]) -> None:
    saved_format = get_format(mark["format"])
    manifest = {"version": MANIFEST_VERSION, **mark, "plain_transformers": saved_format.plain_transformers,
                "description": saved_format.description}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None if it is a plain transformers folder."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is damaged ({exc}); the model folder cannot be read") from exc
    if not isinstance(manifest, dict) or "format" not in manifest:
        raise ModelLoadError(f"{path} does not name a format; the model folder is damaged")
    return manifest
