"""Window state in QSettings (ARCHITECTURE pattern 10).

When ``COMPRESSION_STUDIO_HOME`` is set (tests set it to a temporary folder), settings go to an
INI file there, so tests never touch the user's own settings.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings

from core.paths import HOME_ENV

ORGANIZATION = "LLM Compression Studio"
APPLICATION = "compression-studio"


def app_settings() -> QSettings:
    home = os.environ.get(HOME_ENV)
    if home:
        return QSettings(str(Path(home).expanduser() / "settings.ini"), QSettings.Format.IniFormat)
    return QSettings(ORGANIZATION, APPLICATION)
