"""Where the app keeps its files: data, caches and run history.

Everything lives under the platform's per-user folders (platformdirs).  Set the environment
variable ``COMPRESSION_STUDIO_HOME`` to put all of it under one folder instead (tests do this).
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir

APP_NAME = "compression-studio"
HOME_ENV = "COMPRESSION_STUDIO_HOME"
DATA_ENV = "COMPRESSION_STUDIO_DATA"
CACHE_ENV = "COMPRESSION_STUDIO_CACHE"


def _home() -> Path | None:
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Folder for durable app data (bundled datasets, run history)."""
    home = _home()
    return (home / "data") if home else Path(user_data_dir(APP_NAME, appauthor=False))


def datasets_dir() -> Path:
    """Folder holding the bundled sample datasets (``COMPRESSION_STUDIO_DATA`` overrides it).

    A packaged app (PyInstaller) ships them in its own folder and uses that copy until the user's
    data folder has its own."""
    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override).expanduser()
    user = data_dir() / "datasets"
    shipped = frozen_resource("datasets")
    return shipped if shipped is not None and not user.is_dir() else user


def frozen_resource(name: str) -> Path | None:
    """``name`` inside a PyInstaller bundle's data folder, or None when not frozen or absent."""
    import sys

    base = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or base is None:
        return None
    path = Path(base) / name
    return path if path.exists() else None


def cache_dir() -> Path:
    """Folder for caches that can be rebuilt at any time (converted GGUF models).

    ``COMPRESSION_STUDIO_CACHE`` overrides it."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    home = _home()
    return (home / "cache") if home else Path(user_cache_dir(APP_NAME, appauthor=False))


def original_measurements_dir() -> Path:
    """Folder of the original models' kept measurements (measured once per model and settings)."""
    return data_dir() / "original-measurements"
