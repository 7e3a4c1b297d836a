"""The main window: the planned flow on the left, its pages on the right.

Model, Pipeline and Run are built; the other steps show what they will hold.  Nothing here imports
torch at module level: the device list and the techniques are found in a background job that
:meth:`MainWindow.start_background_setup` starts once the window is on screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, QSize, Qt
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QHBoxLayout, QListWidget, QListWidgetItem, QMainWindow, QStackedWidget, QWidget

from gui.errors import show_error
from gui.menus import install_menus
from gui.screens.compare.panel import ComparePanel
from gui.screens.export.panel import ExportPanel
from gui.screens.history.panel import HistoryPanel
from gui.screens.model.panel import ModelPanel
from gui.screens.model.source_picker import is_model_path
from gui.screens.pipeline.panel import ModelContext, PipelinePanel
from gui.screens.run.panel import RunPanel
from gui.settings import app_settings
from gui.shortcuts import install_shortcuts
from gui.worker import JobHandle, start_job

STEPS = ("Model", "Pipeline", "Run", "Compare", "History", "Export")
LIVE_TOOLTIPS = {
    "Model": "Choose and load the model to compress, and see what it is made of.",
    "Pipeline": "Choose the compression steps and their settings, the data, and see a pre-flight estimate.",
    "Run": "Run the pipeline in the background with live plots, progress and a log; cancel at any time.",
    "Compare": "The original (teacher) against the result (student): measured sizes, speed and quality side by "
               "side, and both models' answers to the same prompt.",
    "History": "Every run kept, finished or not: the best size/quality trade-offs, two runs side by side, "
               "re-run a recipe, delete old runs.",
    "Export": "Copy the result elsewhere, write a GGUF file, save the recipe or an HTML report to share.",
}


def _dropped_model_path(mime: Any) -> Path | None:
    for url in mime.urls() if mime.hasUrls() else []:
        if url.isLocalFile() and is_model_path(Path(url.toLocalFile())):
            return Path(url.toLocalFile())
    return None


class MainWindow(QMainWindow):
    def __init__(self, source: str | None = None, settings: QSettings | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setMinimumSize(900, 600)
        self.settings = settings if settings is not None else app_settings()
        self.setup_job: JobHandle | None = None
        self.environment: Any = None

        self.nav = QListWidget()
        self.nav.setToolTip("The steps of compressing a model, top to bottom (Ctrl+1 … Ctrl+6).")
        self.nav.setIconSize(QSize(0, 0))
        self.nav.setSpacing(2)
        self.stack = QStackedWidget()
        self.model_panel = ModelPanel()
        self.pipeline_panel = PipelinePanel(self.model_context)
        self.run_panel = RunPanel(self.run_source, estimate_source=lambda: self.pipeline_panel.estimate_box.last)
        self.compare_panel = ComparePanel(self.model_panel.device)
        self.export_panel = ExportPanel(self._report_images, self.model_panel.device)
        self.history_panel = HistoryPanel()
        pages = {"Model": self.model_panel, "Pipeline": self.pipeline_panel, "Run": self.run_panel,
                 "Compare": self.compare_panel, "History": self.history_panel, "Export": self.export_panel}
        for number, name in enumerate(STEPS, start=1):
            item = QListWidgetItem(f"{number}   {name}")
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setSizeHint(QSize(0, self.fontMetrics().height() + 16))
            item.setToolTip(LIVE_TOOLTIPS[name])
            self.nav.addItem(item)
            self.stack.addWidget(pages[name])
        width = max(self.nav.sizeHintForColumn(0), self.fontMetrics().horizontalAdvance("0   Pipeline")) + 48
        self.nav.setFixedWidth(width)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.nav.setCurrentRow(0)

        central = QWidget()
        layout = QHBoxLayout(central)
        layout.addWidget(self.nav)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.model_panel.model_loaded.connect(self._on_model_loaded)
        self.model_panel.load_failed.connect(self._on_model_load_failed)
        self.model_panel.device_box.currentIndexChanged.connect(self.pipeline_panel.refresh_availability)
        self.model_panel.task_box.currentIndexChanged.connect(self.pipeline_panel.refresh_availability)
        self.pipeline_panel.run_requested.connect(self.run_pipeline)
        self.pipeline_panel.recipe_loaded.connect(self._on_recipe_loaded)
        self.run_panel.run_finished.connect(self._on_run_finished)
        self.run_panel.busy_changed.connect(lambda _busy: self.history_panel.refresh_if_shown())
        self.history_panel.rerun_requested.connect(self.rerun_recipe)
        self.compare_panel.run_opened.connect(self.export_panel.set_run)
        self.export_panel.run_opened.connect(self.compare_panel.set_run)
        install_shortcuts(self)  # Ctrl+R, Esc, Ctrl+O, Ctrl+S, Ctrl+1..6 (gui/shortcuts.py)
        install_menus(self)  # File, View (pages, appearance), Run, Help (gui/menus.py)
        self._restore_state(source)

    # -- startup work that needs torch -----------------------------------------------------------
    def start_background_setup(self) -> JobHandle:
        """Find devices and techniques in a worker (imports torch); call once the window shows."""
        from gui.jobs import probe_environment

        source = self.model_panel.source()
        self.setup_job = start_job(lambda: probe_environment(source), on_finished=self.set_environment,
                                   on_errored=lambda exc: show_error(exc, self, "Looking for devices"))
        return self.setup_job

    def set_environment(self, environment: Any) -> None:
        self.environment = environment
        self.model_panel.set_environment(environment)
        self.pipeline_panel.set_environment(environment)

    # -- what the Pipeline and Run pages need from the Model page ---------------------------------
    def model_context(self) -> ModelContext:
        """The chosen model, its task, the device, free memory, and the summary once that model is loaded."""
        result = self.model_panel.result
        device = self.model_panel.device()
        free = next((d.free_bytes for d in getattr(self.environment, "devices", []) if d.id == device), None)
        source = self.model_panel.source()
        summary = result.summary if result is not None and result.loaded.source == source else None
        return ModelContext(source, self.model_panel.task(), device, summary, free, self.model_panel.load_error)

    def _load_failed_error(self) -> Exception | None:
        """The refusal to run while the Model page's last load failed (None when a run may start)."""
        if not self.model_panel.load_error:
            return None
        from core.errors import ModelLoadError

        return ModelLoadError("the model could not be loaded, so there is nothing to compress yet: "
                              "load a model on the Model page first, then run")

    def run_source(self) -> tuple[Any, Path, str]:
        """What the Run page runs: the Pipeline's recipe, a new output folder, the device (refused after a
        failed load)."""
        refusal = self._load_failed_error()
        if refusal is not None:
            raise refusal
        recipe = self.pipeline_panel.build_recipe()
        return recipe, self.pipeline_panel.output_dir(recipe), self.model_panel.device()

    def run_pipeline(self) -> JobHandle | None:
        """Show the Run page and start the pipeline (Ctrl+R anywhere); after a failed load, say so instead."""
        refusal = self._load_failed_error()
        if refusal is not None:
            self.nav.setCurrentRow(STEPS.index("Model"))
            show_error(refusal, self, "Starting the run")
            return None
        self.nav.setCurrentRow(STEPS.index("Run"))
        return self.run_panel.run()

    def _on_run_finished(self, _report: dict) -> None:
        """Compare and Export get the run just finished (read back from its output folder)."""
        folder = self.run_panel.output_dir
        if folder is None or not folder.is_dir():
            return
        try:
            run = self.compare_panel.show_folder(folder)
        except Exception as exc:
            show_error(exc, self, "Reading the result")
            return
        self.export_panel.set_run(run)

    def _report_images(self) -> dict[str, bytes]:
        """PNGs of the comparison charts, for the HTML report (grabbed in the GUI thread)."""
        return self.compare_panel.png_images() if self.compare_panel.run is not None else {}

    def rerun_recipe(self, recipe: Any) -> JobHandle | None:
        """Load a recipe from the History page into the Pipeline page and run it into a new folder."""
        if self.run_panel.is_busy():
            from core.errors import StudioError

            show_error(StudioError("a run is already going on: wait for it to end or cancel it, then re-run"),
                       self, "Re-running the recipe")
            return None
        self.pipeline_panel.apply_recipe(recipe)
        self._on_recipe_loaded(recipe)
        return self.run_pipeline()

    def _on_recipe_loaded(self, recipe: Any) -> None:
        if recipe.model.source != self.model_context().source:
            self.model_panel.set_source(recipe.model.source)
            self.model_panel.set_task(recipe.model.task)

    # -- drag and drop --------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _dropped_model_path(event.mimeData()) is not None and not self.model_panel.is_busy():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        path = _dropped_model_path(event.mimeData())
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_source(str(path))

    def open_source(self, source: str) -> None:
        """Show the Model step with ``source`` chosen, and load it."""
        self.nav.setCurrentRow(0)
        self.model_panel.set_source(source)
        self.model_panel.load()

    # -- state ---------------------------------------------------------------------------------
    def _on_model_loaded(self, result: Any) -> None:
        self.setWindowTitle(f"{Path(result.loaded.source).name or result.loaded.source} "
                            f"({result.summary.architecture})")
        self.settings.setValue("model/last_source", self.model_panel.source())
        self.settings.setValue("model/task", self.model_panel.task())
        self.pipeline_panel.refresh_availability()

    def _on_model_load_failed(self, _line: str) -> None:
        self.setWindowTitle("")  # the application's name alone: no model is loaded
        self.pipeline_panel.refresh_availability()

    def _restore_state(self, source: str | None) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 820)
        splitter = self.settings.value("window/model_splitter")
        if isinstance(splitter, QByteArray):
            self.model_panel.splitter.restoreState(splitter)
        last = self.settings.value("model/last_source")
        if source or last:
            self.model_panel.set_source(source or str(last))
        task = self.settings.value("model/task")
        if task:
            self.model_panel.set_task(str(task))

    def save_state(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/model_splitter", self.model_panel.splitter.saveState())
        self.settings.setValue("model/last_source", self.model_panel.source())
        self.settings.setValue("model/task", self.model_panel.task())
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_state()
        for job in (self.model_panel.job, self.setup_job, self.run_panel.job, *self.compare_panel.jobs(),
                    *self.export_panel.jobs()):
            if job is not None and job.is_running():
                job.cancel()
                job.wait()
        super().closeEvent(event)
