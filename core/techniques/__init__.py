"""Compression techniques, one sub-package per family.

Each technique module registers its step with ``core.engine.registry.register`` (and, when it replaces
modules, its saved format with ``core.models.formats.register_format``) when it is imported;
:func:`load_all` imports every one of them once.  Nothing else here is imported statically, so the
registry and the loader may call :func:`load_all` without depending on any technique.
"""

from __future__ import annotations

import importlib
import pkgutil

_LOADED = False


def load_all() -> None:
    """Import every technique module under this package (each registers itself); cheap after the first call."""
    global _LOADED
    if _LOADED:
        return
    for module in pkgutil.walk_packages(__path__, __name__ + "."):
        importlib.import_module(module.name)
    _LOADED = True
