"""The Export page: the result folder, a copy elsewhere, GGUF, the recipe and an HTML report.

Every export runs in a background job with a progress bar and can be cancelled; the writers in
:mod:`core.io.export` are atomic, so a failure or a cancel leaves nothing half-written, and a failure
becomes the usual error dialog.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from core.eval.compare import read_output_folder
from gui.errors import show_error
from gui.screens.export.gguf_box import GgufBox
from gui.widgets.formatting import format_bytes
from gui.widgets.labels import heading, rich_label
from gui.widgets.result_folder import OPEN_SHORTCUT, ask_result_folder, open_result_button
from gui.worker import JobHandle, call_as_job, start_job

ImagesSource = Callable[[], dict[str, bytes]]


def _button(text: str, shortcut: str, tooltip: str, slot: Callable[[], Any]) -> QPushButton:
    button = QPushButton(f"{text}  ({shortcut})")
    button.setShortcut(shortcut)
    button.setToolTip(tooltip)
    button.clicked.connect(lambda: slot())
    return button


def _ask_save(parent: QWidget, title: str, suggestion: Path, pattern: str) -> Path | None:
    chosen, _ = QFileDialog.getSaveFileName(parent, title, str(suggestion), pattern)
    return Path(chosen) if chosen else None


class ExportPanel(QWidget):
    run_opened = Signal(object)  # core.eval.compare.SavedRun, when the user opens a folder here
    exported = Signal(str, object)  # (what, result)

    def __init__(self, images: ImagesSource | None = None, device: Callable[[], str] | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.images = images or dict
        self.device = device or (lambda: "cpu")
        self.run: Any = None
        self.info: Any = None  # core.io.export.OutputInfo
        self.job: JobHandle | None = None
        self.describe_job: JobHandle | None = None
        self.last_written: Path | None = None

        self.open_button = open_result_button(lambda: self.open_folder())
        self.open_button.setShortcut(OPEN_SHORTCUT)
        self.folder_label = rich_label("No result yet: run a pipeline, or open the output folder of an earlier run.")
        self.show_button = QPushButton("Show in file manager")
        self.show_button.setToolTip("Open the result folder in your file manager.")
        self.show_button.clicked.connect(self.show_folder)
        self.copy_button = _button("Save a copy as…", "Ctrl+Shift+S", "Copy the whole result folder (model, "
                                   "tokenizer, recipe, report) to a new folder. It appears only when complete.",
                                   self.save_copy)
        self.gguf_button = _button("Export GGUF…", "Ctrl+E", "Write one .gguf file per ticked type for llama.cpp, "
                                   "Ollama or LM Studio, one after another.", self.export_gguf)
        self.gguf = GgufBox(self.gguf_button)
        self.gguf_imatrix = self.gguf.imatrix
        self.gguf_note = self.gguf.note
        self.gguf.types.itemChanged.connect(lambda _item: self._refresh())
        self._queue: dict[str, Any] | None = None  # while a GGUF queue runs: its types and the files finished
        self.recipe_button = _button("Save recipe as YAML…", "Ctrl+Shift+Y", "Save the recipe that made this result; "
                                     "run it again with compression-studio-cli run, or load it on the Pipeline page.",
                                     self.save_recipe)
        self.report_button = _button("Save HTML report…", "Ctrl+Shift+H", "Save one HTML file with the comparison "
                                     "table, the charts, the steps and the recipe, to send to a colleague.",
                                     self.save_report)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setToolTip("Progress of the export running now.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the export. Nothing half-written is left behind.")
        self.cancel_button.clicked.connect(self.cancel)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._build_layout()
        self.set_run(None)

    def _build_layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.folder_label, 1)
        top.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignTop)
        folder_box = QGroupBox("The model folder")
        folder_layout = QHBoxLayout(folder_box)
        folder_layout.addWidget(self.show_button)
        folder_layout.addWidget(self.copy_button)
        folder_layout.addStretch(1)
        gguf_box = self.gguf
        files_box = QGroupBox("Recipe and report")
        files_layout = QHBoxLayout(files_box)
        files_layout.addWidget(self.recipe_button)
        files_layout.addWidget(self.report_button)
        files_layout.addStretch(1)
        progress = QHBoxLayout()
        progress.addWidget(self.progress, 1)
        progress.addStretch(0)  # keeps Cancel button-sized while a GGUF queue shows its own bars instead
        progress.addWidget(self.cancel_button)
        column = QWidget()
        column.setMaximumWidth(900)
        # never taller than its contents: a wrapped status line made the GGUF group grow blank bands
        column.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        inner = QVBoxLayout(column)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.setSpacing(12)
        inner.addLayout(top)
        for box in (folder_box, gguf_box, files_box):
            inner.addWidget(box)
        inner.addLayout(progress)
        inner.addWidget(self.status)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Export"))
        layout.addWidget(column)
        layout.addStretch(1)

    # -- which result ------------------------------------------------------------------------------
    def set_run(self, run: Any) -> None:
        """Export ``run`` (a :class:`core.eval.compare.SavedRun`); its format is read in a background job."""
        self.run, self.info = run, None
        self._refresh()
        if run is None:
            return
        from core.io.export import describe_output

        self.folder_label.setText(f"<b>{escape(str(run.folder))}</b><br>Reading what was saved…")
        folder = run.folder
        self.describe_job = start_job(lambda: call_as_job(describe_output, folder),
                                      on_finished=lambda info: self._on_described(folder, info),
                                      on_errored=lambda exc: show_error(exc, self.window(), "Reading the result"))

    def _on_described(self, folder: Path, info: Any) -> None:
        if self.run is None or self.run.folder != folder:
            return
        self.info = info
        self._refresh()

    def _refresh(self) -> None:
        busy = self.is_busy()
        have = self.run is not None
        for button in (self.show_button, self.copy_button, self.recipe_button, self.report_button):
            button.setEnabled(have and not busy)
        applies = have and not busy and self.info is not None and not self.info.gguf_problem
        self.gguf.set_enabled(applies)
        self.gguf_button.setEnabled(applies and bool(self.gguf.checked()))
        self.cancel_button.setEnabled(busy)
        queue = busy and self._queue is not None
        self.progress.setVisible(busy and not queue)  # an idle, empty bar looked like a text field to fill in
        self.gguf.show_progress(queue)
        self.cancel_button.setVisible(busy)
        self.open_button.setEnabled(not busy)
        if not have:
            self.folder_label.setText("No result yet: run a pipeline, or open the output folder of an earlier run.")
            self.gguf_note.setText("")
            return
        if self.info is None:
            return
        info = self.info
        self.folder_label.setText(
            f"<b>{escape(str(info.folder))}</b><br>{escape(info.architecture)}, {len(info.files)} files, "
            f"{format_bytes(info.bytes)}.<br>{escape(info.loads_in())}")
        self.folder_label.setToolTip(info.description)
        self._label_sizes()
        self.gguf_note.setText(f"Does not apply: {info.gguf_problem}" if info.gguf_problem else
                               "Applies: a causal language model with plain float layers (Llama and Qwen2 by our "
                               "own writer, other families by llama.cpp's converter).")

    def _label_sizes(self) -> None:
        """Each type's line with its estimated file size, from the result's parameter count."""
        parameters = (self.run.report.get("after") or {}).get("parameters") if self.run is not None else None
        self.gguf.label_sizes(parameters)

    def open_folder(self, folder: str | Path | None = None) -> Any:
        if folder is None:
            folder = ask_result_folder(self, self.run.folder.parent if self.run else None)
            if folder is None:
                return None
        try:
            run = read_output_folder(folder)
        except Exception as exc:
            show_error(exc, self.window(), "Opening the result")
            return None
        self.set_run(run)
        self.run_opened.emit(run)
        return run

    def show_folder(self) -> None:
        if self.run is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.run.folder)))

    # -- exports -------------------------------------------------------------------------------------
    def is_busy(self) -> bool:
        return self.job is not None and self.job.is_running()

    def _start(self, what: str, factory: Callable[[], Any]) -> JobHandle | None:
        if self.is_busy():
            return None
        self.progress.setValue(0)
        self.status.setText(f"{what}…")
        self.job = start_job(factory, on_event=self._on_event,
                             on_finished=lambda result: self._on_finished(what, result),
                             on_errored=lambda exc: self._on_errored(what, exc),
                             on_cancelled=lambda: self._on_cancelled(what),
                             on_done=self._on_done)
        self._refresh()
        return self.job

    def _on_event(self, event: Any) -> None:
        from core.engine.gguf_queue import QueueItem
        from core.events import Log, Progress

        if isinstance(event, QueueItem):
            self.gguf.on_item(event)
            if event.done and self._queue is not None:
                self._queue["done"].append(Path(event.path))
        elif isinstance(event, Progress) and self._queue is not None:
            self.gguf.on_progress(event.stage, event.fraction)
        elif isinstance(event, Progress):
            self.progress.setRange(0, 1000 if event.total else 0)
            self.progress.setValue(round(event.fraction * 1000))
        elif isinstance(event, Log):
            self.status.setText(event.message)

    def _on_finished(self, what: str, result: Any) -> None:
        self.progress.setRange(0, 1000)
        self.progress.setValue(1000)
        if isinstance(result, dict) and "files" in result:  # a GGUF queue
            files = [Path(f["path"]) for f in result["files"]]
            self.last_written = files[0]
            self.gguf.show_command(files[0])
            written = ", ".join(f"{f.name} ({format_bytes(int(r['bytes']))})" for f, r in zip(files, result["files"],
                                                                                          strict=True))
            cards = f"; Modelfiles and {Path(result['cards'][-1]).name} beside them" if result["cards"] else ""
            self.status.setText(f"{what}: done. Written to {files[0].parent}: {written}{cards}")
            self.exported.emit(what, files[0])
            return
        path = Path(result["path"] if isinstance(result, dict) else result)
        self.last_written = path
        self.status.setText(f"{what}: done. Written to {path}")
        self.exported.emit(what, path)

    def _finished_note(self) -> str:
        done = self._queue["done"] if self._queue else []
        if not done:
            return "Nothing was written."
        self.gguf.show_command(done[0])
        return f"The finished files stay: {', '.join(p.name for p in done)}; nothing of the others was written."

    def _on_cancelled(self, what: str) -> None:
        self.status.setText(f"{what}: cancelled. {self._finished_note()}")

    def _on_errored(self, what: str, exc: BaseException) -> None:
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.status.setText(f"{what} failed: {exc}. {self._finished_note()}")
        show_error(exc, self.window(), what)

    def _on_done(self) -> None:
        self._queue = None
        self._refresh()

    def cancel(self) -> None:
        if self.is_busy():
            self.job.cancel()
            self.status.setText("Cancelling…")

    def _export(self, what: str, destination: str | Path | None, title: str, suffix: str, pattern: str,
                write: Callable[[Path, Path], Any]) -> JobHandle | None:
        """Run ``write(result folder, target)`` as the background job ``what``; None if nothing started.

        ``target`` is ``destination``, or where the user chooses in a save dialog (``title``, file
        ``pattern``) that suggests the result folder's name plus ``suffix``, next to that folder.
        Nothing starts without a result or when the dialog is cancelled.
        """
        if self.run is None:
            return None
        folder = self.run.folder
        suggestion = folder.parent / f"{folder.name}{suffix}"
        target = Path(destination) if destination else _ask_save(self, title, suggestion, pattern)
        if target is None:
            return None
        return self._start(what, lambda: write(folder, target))

    def save_copy(self, destination: str | Path | None = None) -> JobHandle | None:
        """Copy the result folder to ``destination`` (asked for when None) in a background job."""
        from core.io.export import iter_copy_output

        return self._export("Saving a copy", destination, "Save a copy of the model folder as", "-copy",
                            "Folder (*)", iter_copy_output)

    def export_gguf(self, destination: str | Path | None = None) -> JobHandle | None:
        """Write every ticked GGUF type (a queue, one importance matrix for all) to ``destination`` (asked for when
        None): that file for one type, ``NAME-TYPE.gguf`` next to it for several; with the Modelfiles and README."""
        if self.run is None or not self.gguf_button.isEnabled():
            return None
        from core.engine.gguf_queue import iter_gguf_queue

        types, device = self.gguf.checked(), self.device()
        imatrix = self.gguf_imatrix.isEnabled() and self.gguf_imatrix.isChecked()
        cards = self.gguf.cards.isChecked()
        several = len(types) > 1
        title = (f"Export {len(types)} GGUF files: each is named NAME-TYPE.gguf" if several else "Export as GGUF")
        what = f"Exporting GGUF {', '.join(types)}"
        self._queue = {"types": types, "done": []}
        # the save dialog asked before replacing a file; core still replaces only files it wrote
        job = self._export(what, destination, title, ".gguf" if several else f"-{types[0]}.gguf",
                           "GGUF files (*.gguf)",
                           lambda folder, target: iter_gguf_queue(folder, target, types, imatrix=imatrix,
                                                                  device=device, overwrite=True, cards=cards))
        if job is None:
            self._queue = None
            self._refresh()
        else:
            self.gguf.start_queue(types)
            self._refresh()
        return job

    def save_recipe(self, destination: str | Path | None = None) -> JobHandle | None:
        from core.io.export import save_recipe

        return self._export("Saving the recipe", destination, "Save the recipe", "-recipe.yaml", "Recipes (*.yaml)",
                            lambda folder, target: call_as_job(save_recipe, folder, target))

    def save_report(self, destination: str | Path | None = None) -> JobHandle | None:
        if self.run is None:
            return None
        images = self.images()  # grabbed here, in the GUI thread
        from core.io.report_html import write_report

        return self._export("Saving the report", destination, "Save the HTML report", "-report.html",
                            "Web pages (*.html)",
                            lambda folder, target: call_as_job(write_report, folder, target, images))

    def jobs(self) -> list[Any]:
        return [self.job, self.describe_job]
