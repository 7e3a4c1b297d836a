"""``compression-studio``: start the desktop app.

Kept light on purpose: PySide6 and the window only; torch is imported in a background job once
the window is on screen.  ``--smoke-test`` shows the window, prints how long that took since the
process started, and quits after one second with exit code 0 (used by packaging tests).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from gui.settings import APPLICATION, ORGANIZATION

ICON_PATH = Path(__file__).resolve().parent.parent / "resources" / "icons" / "app.svg"


def seconds_since_process_start() -> float:
    """Wall time since this process started.

    On Linux from /proc (clock ticks since boot, precise to 10 ms); psutil's create_time rounds the
    boot time to whole seconds there, so it is only the fallback elsewhere.
    """
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            return float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return time.time() - psutil.Process(os.getpid()).create_time()
    except Exception:  # a timing nicety must never stop the app
        return float("nan")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="compression-studio", description="LLM Compression Studio")
    parser.add_argument("--source", help="model to preselect: a folder, a .gguf file, a hub id or bundled:NAME")
    parser.add_argument("--smoke-test", action="store_true",
                        help="show the window, print the start-up time and quit after 1 s")
    return parser.parse_known_args(argv)  # the rest (e.g. -platform offscreen) goes to Qt


GIL_SWITCH_INTERVAL_S = 0.0001


def create_app(qt_argv: list[str]) -> QApplication:
    """The QApplication with name, icon and the Fusion style on the system's light/dark palette."""
    app = QApplication.instance() or QApplication(qt_argv)
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("LLM Compression Studio")
    app.setDesktopFileName(APPLICATION)
    if ICON_PATH.is_file():
        app.setWindowIcon(QIcon(str(ICON_PATH)))
    app.setStyle("Fusion")  # Fusion follows the platform palette and colour scheme; no colours hard-coded
    # A thread waiting for the GIL asks its holder to let go after this interval (default 5 ms).  A
    # repaint takes the GIL again after each Qt call, so while a job's thread runs Python each of
    # those waits cost up to 5 ms, and a repaint 50-100 ms (bench/bench_ui_stall.py).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    return app


def install_excepthook(window) -> None:
    """Uncaught exceptions in slots go to the same error dialog; the app keeps running."""
    from gui.errors import show_error

    def hook(kind, value, tb):
        traceback.print_exception(kind, value, tb)
        if isinstance(value, Exception):
            show_error(value, window)

    sys.excepthook = hook


def missing_display_message(env: dict[str, str] | None = None, platform: str = sys.platform) -> str | None:
    """On Linux with no screen to draw on, say what to do instead of letting Qt abort."""
    env = dict(os.environ if env is None else env)
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM") or env.get("DISPLAY") \
            or env.get("WAYLAND_DISPLAY"):
        return None
    return ("compression-studio: no display found (DISPLAY and WAYLAND_DISPLAY are unset). Run it on a desktop, "
            "under a virtual screen (`xvfb-run -a make run`), or use the command line: "
            "`.venv/bin/compression-studio-cli --help`.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args, qt_args = parse_args(argv[1:])
    problem = None if "-platform" in qt_args else missing_display_message()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    app = create_app([argv[0] if argv else "compression-studio", *qt_args])

    from gui.main_window import MainWindow
    from gui.theme import follow_system

    window = MainWindow(source=args.source)
    follow_system(app, window.settings)  # light or dark as the desktop (or View ▸ Appearance) says
    window.show()
    install_excepthook(window)

    def after_show() -> None:
        shown = seconds_since_process_start()
        if args.smoke_test or os.environ.get("COMPRESSION_STUDIO_TIMING"):
            print(f"compression-studio: window shown {shown:.2f} s after process start", flush=True)
        window.start_background_setup()

    QTimer.singleShot(0, after_show)
    if args.smoke_test:
        QTimer.singleShot(1000, window.close)
        QTimer.singleShot(1000, app.quit)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
