"""Grab every page of the app, mid-run and after a run, at several window sizes (``make screenshot-tour``).

    xvfb-run -a python -m gui.screenshot_tour --out docs/screenshots/tour --sizes 1024x700,1600x1000

One real session on the bundled model: load it, set up a Wanda 50% step (as :mod:`gui.screenshot` does),
grab the Model and Pipeline pages, start the run and, once about half the layers are pruned, grab all six
pages at every size (``mid-run-<page>-<W>x<H>.png``); when the run is done and the Compare page's
playground has answered, grab all six again (``after-<page>-<W>x<H>.png``).  Before the run, Model and
Pipeline are grabbed too (``before-…``).  Exit code 0 when every grab was written, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer

from gui.app import create_app
from gui.screenshot import prepare_pipeline, use_color_scheme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNG files")
    parser.add_argument("--sizes", default="1024x700,1600x1000", help="window sizes WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds the whole tour may take")
    parser.add_argument("--color-scheme", choices=("system", "light", "dark"), default="system")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes.split(",")]

    app = create_app([sys.argv[0]])
    if args.color_scheme != "system":
        use_color_scheme(app, args.color_scheme)
    import gui.main_window as main_window
    import gui.screens.compare.panel as compare_panel
    import gui.screens.compare.playground as compare_playground
    import gui.screens.export.panel as export_panel
    import gui.screens.model.panel as model_panel
    import gui.screens.pipeline.panel as pipeline_panel
    import gui.screens.run.panel as run_panel
    from core.models.bundled import DEFAULT_MODEL
    from gui.main_window import STEPS, MainWindow

    state = {"code": 1, "written": 0}
    started = time.monotonic()

    def fail(exc: BaseException, parent=None, action=None) -> None:
        print(f"screenshot tour: {action or 'loading'} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        app.quit()

    for module in (model_panel, pipeline_panel, run_panel, compare_panel, compare_playground, export_panel,
                   main_window):
        module.show_error = fail  # no modal dialog to block an unattended run

    scratch = tempfile.TemporaryDirectory(prefix="compression-studio-tour-")
    settings = QSettings(str(Path(scratch.name) / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(source=DEFAULT_MODEL, settings=settings)
    window.resize(*sizes[0])
    window.show()
    args.out.mkdir(parents=True, exist_ok=True)

    def grab_pages(stage: str, pages: tuple[str, ...]) -> None:
        for width, height in sizes:
            window.resize(width, height)
            for page in pages:
                window.nav.setCurrentRow(STEPS.index(page))
                window.run_panel.plots.redraw()
                for _ in range(3):
                    app.processEvents()
                path = args.out / f"{stage}-{page.lower()}-{width}x{height}.png"
                if not window.grab().save(str(path)):
                    fail(OSError(f"could not write {path}"), action="saving")
                    return
                state["written"] += 1
        print(f"screenshot tour: {stage} grabbed after {time.monotonic() - started:.0f} s", flush=True)

    def finished_run(_report) -> None:
        playground = window.compare_panel.playground

        def export_ready() -> None:
            if window.export_panel.info is None:
                QTimer.singleShot(200, export_ready)
                return
            grab_pages("after", STEPS)
            state["code"] = 0
            app.quit()

        playground.answered.connect(lambda _r: QTimer.singleShot(300, export_ready))
        if playground.generate() is None:
            fail(RuntimeError("the playground did not start"), action="generating")

    def loaded(_result) -> None:
        grab_pages("before", ("Model",))
        prepare_pipeline(window)
        QTimer.singleShot(500, start)

    def start() -> None:
        grab_pages("before", ("Pipeline",))
        job = window.run_pipeline()
        if job is None:
            fail(RuntimeError("the run did not start"), action="starting the run")
            return
        grabbed = {"mid": False}

        def maybe_grab(_event=None) -> None:
            layers = sum(len(v) for v in window.run_panel.plots.layer_values.values())
            if not grabbed["mid"] and layers >= 100:
                grabbed["mid"] = True
                grab_pages("mid-run", STEPS)

        job.job_event.connect(maybe_grab)
        job.finished.connect(lambda r: QTimer.singleShot(500, lambda: finished_run(r)))

    window.model_panel.model_loaded.connect(loaded)
    setup = window.start_background_setup()
    setup.done.connect(window.model_panel.load)
    QTimer.singleShot(int(args.timeout * 1000), lambda: fail(TimeoutError(f"not done after {args.timeout:.0f} s")))
    app.exec()
    scratch.cleanup()
    print(f"screenshot tour: {state['written']} files in {args.out}", flush=True)
    return state["code"]


if __name__ == "__main__":
    sys.exit(main())
