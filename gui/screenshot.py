"""Take a screenshot of the main window with a model loaded (used by ``make screenshots``).

    xvfb-run -a python -m gui.screenshot --source bundled:smollm2-135m --out docs/screenshots/model.png
    xvfb-run -a python -m gui.screenshot --step pipeline --out docs/screenshots/pipeline.png
    xvfb-run -a python -m gui.screenshot --step run --out docs/screenshots/run.png
    xvfb-run -a python -m gui.screenshot --step compare --out docs/screenshots/compare.png
    xvfb-run -a python -m gui.screenshot --step export --out docs/screenshots/export.png
    xvfb-run -a python -m gui.screenshot --step compare --result OUTPUT_FOLDER --out compare.png
    xvfb-run -a python -m gui.screenshot --step pipeline --tasks arc_easy,piqa --out pipeline.png
    xvfb-run -a python -m gui.screenshot --step run --recipe docs/screenshots/recipes/qat-run.yaml --out qat.png

Starts the app, waits for the device list, loads the model, waits until it is shown, grabs the
window to a PNG and quits.  ``--step pipeline`` first sets up a Wanda 50% step with a small
calibration set; ``--step run`` also starts that run and grabs the window mid-run, once about
half the layers are pruned.  ``--step compare`` runs it to the end (speed measured too) and grabs
the Compare page once the playground has answered; ``--step export`` grabs the Export page of that
result.  ``--result FOLDER`` shows an existing output folder on Compare and Export instead of
running (the playground is left unasked); ``--tasks`` ticks zero-shot tasks on the Pipeline page.
``--recipe FILE`` sets up that recipe instead of the Wanda step (as File ▸ Open recipe would); when
it trains, ``--step run`` grabs once the Loss chart has ``--loss-points`` steps.
Exit code 0 on success, 1 if anything failed or timed out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer

from gui.app import create_app


def use_color_scheme(app, scheme: str) -> None:
    """Draw the app light or dark as View ▸ Appearance does (gui/theme.py: where the platform has no
    scheme of its own, as under Xvfb, a complete dark palette stands in), so the grab shows how it looks."""
    from gui.theme import apply_appearance

    apply_appearance(app, scheme)


def _prepare(window, name: str, technique: str, sparsity: float, calibration_windows: int | None = None,
             speed: bool = False, tasks: tuple[str, ...] = ()) -> None:
    """One pruning step at ``sparsity`` with 128-token windows and 4 evaluation windows (and ``tasks`` ticked)."""
    panel = window.pipeline_panel
    panel.name.setText(name)
    step = panel.add_step(technique)
    step.config.sparsity = sparsity
    panel.step_list.setCurrentRow(0)
    panel.data_box.data_form.set_value("sequence_length", 128)
    if calibration_windows is not None:
        panel.data_box.data_form.set_value("calibration_windows", calibration_windows)
    panel.data_box.eval_form.set_value("max_windows", 4)
    if speed:
        panel.data_box.eval_form.set_value("speed", True)
    for task in tasks:
        panel.data_box.tasks.boxes[task].setChecked(True)
    panel.recipe_bar.output.setText(str(Path(tempfile.gettempdir()) / "compression-studio-shots"))
    panel.update_estimate()


def prepare_pipeline(window, tasks: tuple[str, ...] = ()) -> None:
    """A Wanda 50% step with a small calibration set, as a person would set it up for a first try."""
    _prepare(window, "Wanda 50% first try", "wanda_prune", 0.5, calibration_windows=8, tasks=tasks)


def prepare_quick_result(window, tasks: tuple[str, ...] = ()) -> None:
    """For the Compare and Export grabs: magnitude pruning (no calibration) and speed measured, so the
    run finishes in a few minutes even on a busy CPU."""
    _prepare(window, "Magnitude 30% quick look", "magnitude_prune", 0.3, speed=True, tasks=tasks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="model to load (default: the bundled model)")
    parser.add_argument("--out", required=True, type=Path, help="PNG file to write")
    parser.add_argument("--size", default="1280x820", help="window size WIDTHxHEIGHT")
    parser.add_argument("--step", default="Model", help="step to show in the grab (Model, Pipeline, …)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the model")
    parser.add_argument("--color-scheme", choices=("system", "light", "dark"), default="system",
                        help="ask the platform for a light or dark palette (Qt 6.8+)")
    parser.add_argument("--result", type=Path, default=None,
                        help="Compare/Export: show this output folder instead of running a pipeline")
    parser.add_argument("--recipe", type=Path, default=None, help="recipe to set up instead of the Wanda step")
    parser.add_argument("--loss-points", type=int, default=8,
                        help="with a recipe that trains: grab the Run page after this many training steps")
    parser.add_argument("--tasks", default="", help="comma-separated zero-shot tasks to tick (arc_easy, piqa, …)")
    args = parser.parse_args(argv)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())

    app = create_app([sys.argv[0]])
    if args.color_scheme != "system":
        use_color_scheme(app, args.color_scheme)
    import gui.screens.model.panel as model_panel
    from core.models.bundled import DEFAULT_MODEL
    from gui.main_window import STEPS, MainWindow

    exit_code = {"value": 1}
    started = time.monotonic()

    def fail(exc: BaseException, parent=None, action=None) -> None:
        print(f"screenshot: {action or 'loading'} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        app.quit()

    import gui.main_window as main_window
    import gui.screens.compare.panel as compare_panel
    import gui.screens.compare.playground as compare_playground
    import gui.screens.export.panel as export_panel
    import gui.screens.pipeline.panel as pipeline_panel
    import gui.screens.run.panel as run_panel

    for module in (model_panel, pipeline_panel, run_panel, compare_panel, compare_playground, export_panel,
                   main_window):
        module.show_error = fail  # no modal dialog to block an unattended run

    # A throw-away settings file: the grab does not depend on, or change, the user's window state.
    scratch = tempfile.TemporaryDirectory(prefix="compression-studio-shot-")
    settings = QSettings(str(Path(scratch.name) / "settings.ini"), QSettings.Format.IniFormat)
    if args.step.lower() == "history":  # a few real runs to show, unless the history already has some
        from core.history.store import History
        from gui.screens.history.samples import record_sample_runs

        if not History().runs():
            record_sample_runs(Path(tempfile.gettempdir()) / "compression-studio-shots" / "history",
                               args.source or DEFAULT_MODEL)
    window = MainWindow(source=args.source or DEFAULT_MODEL, settings=settings)
    width, height = (int(v) for v in args.size.lower().split("x"))
    window.resize(width, height)
    window.show()

    step = next((s for s in STEPS if s.lower() == args.step.lower()), None)
    if step is None:
        parser.error(f"--step must be one of {', '.join(STEPS)}")

    def grab() -> None:
        window.nav.setCurrentRow(STEPS.index(step))
        window.run_panel.plots.redraw()
        if step == "History":
            from gui.screens.history.samples import show_two_best

            show_two_best(window.history_panel)
        app.processEvents()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if window.grab().save(str(args.out)):
            print(f"screenshot: {args.out} after {time.monotonic() - started:.1f} s", flush=True)
            exit_code["value"] = 0
        app.quit()

    def after_run() -> None:
        """Compare: wait for the playground's answers; Export: wait until the folder is described."""
        if step == "Compare":
            window.nav.setCurrentRow(STEPS.index("Compare"))
            playground = window.compare_panel.playground
            playground.answered.connect(lambda _r: QTimer.singleShot(300, grab))
            if playground.generate() is None:
                fail(RuntimeError("the playground did not start"), action="generating")
            return
        if window.export_panel.info is None:
            QTimer.singleShot(200, after_run)
        else:
            QTimer.singleShot(300, grab)

    def loaded(_result) -> None:
        if step not in ("Pipeline", "Run", "Compare", "Export"):
            QTimer.singleShot(500, grab)
            return
        if args.result is not None and step in ("Compare", "Export"):
            try:
                window.export_panel.set_run(window.compare_panel.show_folder(args.result))
            except Exception as exc:
                fail(exc, action="reading the result folder")
                return
            QTimer.singleShot(500, grab if step == "Compare" else after_run)
            return
        if args.recipe is not None:
            from core.engine.recipe import load_recipe

            window.pipeline_panel.apply_recipe(load_recipe(args.recipe))
            window.pipeline_panel.recipe_bar.output.setText(
                str(Path(tempfile.gettempdir()) / "compression-studio-shots" / args.recipe.stem))
        else:
            (prepare_quick_result if step in ("Compare", "Export") else prepare_pipeline)(window, tasks)
        if step == "Pipeline":
            QTimer.singleShot(500, grab)
            return
        job = window.run_pipeline()
        if job is None:
            fail(RuntimeError("the run did not start"), action="starting the run")
            return
        if step in ("Compare", "Export"):
            job.finished.connect(lambda _r: QTimer.singleShot(300, after_run))
            return
        grabbed = {"done": False}

        plots = window.run_panel.plots
        trains = args.recipe is not None and not plots.loss_plot.isHidden()  # the Loss chart is shown: it trains

        def maybe_grab(_event=None, force: bool = False) -> None:
            layers = sum(len(v) for v in plots.layer_values.values())
            steps = plots.loss["total"][0].size if "total" in plots.loss else 0
            if not grabbed["done"] and (force or (steps >= args.loss_points if trains else layers >= 100)):
                grabbed["done"] = True
                QTimer.singleShot(300, grab)

        job.job_event.connect(maybe_grab)
        job.finished.connect(lambda _r: maybe_grab(force=True))

    window.model_panel.model_loaded.connect(loaded)
    setup = window.start_background_setup()
    setup.done.connect(window.model_panel.load)  # load once the device list is there
    QTimer.singleShot(int(args.timeout * 1000), lambda: fail(TimeoutError(f"no model after {args.timeout:.0f} s")))
    app.exec()
    scratch.cleanup()
    return exit_code["value"]


if __name__ == "__main__":
    sys.exit(main())
