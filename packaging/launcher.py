"""Entry points of the PyInstaller bundle: the app, or the command line when started as ``...-cli``.

One script serves both executables of the bundle (``compression-studio`` and
``compression-studio-cli``); the executable's name picks which ``main`` runs.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    if Path(sys.executable).name.startswith("compression-studio-cli"):
        from core.cli.commands import main
    else:
        from gui.app import main
    sys.exit(main())
