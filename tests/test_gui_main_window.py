"""The main window and the job worker, with pytest-qt on the offscreen platform."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from core.errors import ModelLoadError  # noqa: E402
from core.events import Log, Metric, Progress  # noqa: E402
from core.models.bundled import DEFAULT_MODEL  # noqa: E402
from gui.errors import build_error_box  # noqa: E402
from gui.main_window import STEPS, MainWindow  # noqa: E402
from gui.screens.model.source_picker import SOURCE_LABELS  # noqa: E402
from gui.settings import app_settings  # noqa: E402
from gui.worker import JobWorker, start_job  # noqa: E402

LOAD_TIMEOUT_MS = 120_000


@pytest.fixture
def window(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


@pytest.fixture
def dialogs(monkeypatch):
    """Every QMessageBox the app shows, recorded instead of blocking the test."""
    shown: list[QMessageBox] = []

    def fake_exec(box):
        shown.append(box)
        return int(QMessageBox.StandardButton.Ok)

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    return shown


def _load(qtbot, window, source):
    panel = window.model_panel
    panel.set_source(str(source))
    with qtbot.waitSignal(panel.model_loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
        assert not panel.load_button.isEnabled() and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.load_button.isEnabled())
    return blocker.args[0]


def test_window_opens_with_bundled_default(qtbot, window, dialogs):
    panel = window.model_panel
    assert panel.source() == DEFAULT_MODEL
    assert panel.picker.box.currentText() == SOURCE_LABELS[DEFAULT_MODEL]
    assert "bundled, works offline" in SOURCE_LABELS[DEFAULT_MODEL]
    assert [window.nav.item(i).data(Qt.ItemDataRole.UserRole) for i in range(window.nav.count())] == list(STEPS)
    assert window.stack.currentWidget() is panel
    for widget in (panel.picker.box, panel.picker.folder_button, panel.picker.gguf_button, panel.task_box,
                   panel.device_box, panel.load_button, panel.cancel_button, window.nav):
        assert widget.toolTip(), widget

    setup = window.start_background_setup()
    with qtbot.waitSignal(setup.done, timeout=LOAD_TIMEOUT_MS):
        pass
    assert panel.device_box.findData("cpu") >= 0
    assert "free" in panel.device_box.itemText(panel.device_box.findData("cpu"))
    assert "Magnitude pruning" in panel.techniques_box.label.text()
    assert not dialogs


def test_every_step_opens_its_own_page(qtbot, window):
    """Each of the six steps in the list shows its screen (none is a placeholder any more)."""
    pages = {"Model": window.model_panel, "Pipeline": window.pipeline_panel, "Run": window.run_panel,
             "Compare": window.compare_panel, "History": window.history_panel, "Export": window.export_panel}
    assert list(pages) == list(STEPS)
    for row, name in enumerate(STEPS):
        window.nav.setCurrentRow(row)
        assert window.stack.currentWidget() is pages[name]
        assert window.nav.item(row).toolTip() and window.nav.item(row).foreground().color() == \
            window.nav.item(0).foreground().color()


def test_gui_modules_do_not_import_torch():
    code = "import sys, gui.app, gui.main_window; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
    # and building the window (the Pipeline page counts the labelled data's labels then) loads neither
    code = ("import os, sys; os.environ['QT_QPA_PLATFORM'] = 'offscreen'; from PySide6.QtWidgets import QApplication; "
            "app = QApplication([]); from gui.main_window import MainWindow; window = MainWindow(); "
            "sys.exit('torch' in sys.modules or 'transformers' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_load_tiny_model_fills_summary_and_table(qtbot, window, dialogs, tiny_llama_dir, tiny_llama):
    from core.models.model_info import inspect_model

    expected = inspect_model(tiny_llama)
    result = _load(qtbot, window, tiny_llama_dir)
    panel = window.model_panel
    assert panel.summary_box.values["parameters"].text() == f"{expected.parameters:,}"
    assert expected.parameters == sum(p.numel() for p in tiny_llama.parameters())
    assert panel.layer_table.model().rowCount() == len(inspect_model(result.loaded.model).layers)
    assert panel.summary_box.values["layers"].text() == "2"
    assert panel.summary_box.values["architecture"].text().startswith("LlamaForCausalLM")
    assert panel.status.text().startswith("Loaded LlamaForCausalLM")
    assert not dialogs

    table = panel.layer_table
    table.sortByColumn(4, Qt.SortOrder.DescendingOrder)  # Params, largest first
    params = [table.layer_model.row_at(r).params for r in range(table.model().rowCount())]
    assert params == sorted(params, reverse=True)


def test_bad_path_shows_error_and_window_stays_usable(qtbot, window, dialogs, tmp_path):
    panel = window.model_panel
    missing = tmp_path / "no-such-model"
    for _ in range(2):  # the second try proves the window is still usable after the dialog
        panel.set_source(str(missing))
        count = len(dialogs)
        qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda n=count: len(dialogs) > n and panel.load_button.isEnabled(), timeout=30_000)
        box = dialogs[-1]
        assert "not found" in box.text() and str(missing) in box.text()
        assert box.informativeText().startswith("What to do:")
        assert box.icon() == QMessageBox.Icon.Warning
        assert panel.picker.isEnabled() and not panel.cancel_button.isEnabled()
    assert window.isVisible() and panel.status.text().startswith("Loading failed")


def test_failed_load_clears_the_old_model_and_blocks_run_until_a_load_works(qtbot, window, dialogs, tmp_path,
                                                                            tiny_llama_dir):
    """Issue 16, item 6: after a failed load nothing of the old model stays on screen, and no run starts
    with the bad path (the Pipeline's button is off, Ctrl+R and the Run page refuse) until a load works."""
    panel, pipeline = window.model_panel, window.pipeline_panel
    _load(qtbot, window, tiny_llama_dir)
    assert pipeline.run_button.isEnabled() and panel.summary_box.values["layers"].text() == "2"

    missing = tmp_path / "no-such-model"
    panel.set_source(str(missing))
    qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(dialogs) and panel.load_button.isEnabled(), timeout=30_000)
    assert all(value.text() == "—" for value in panel.summary_box.values.values())
    assert panel.layer_table.model().rowCount() == 0 and panel.result is None
    note = panel.summary_box.note.text()
    assert note.startswith("No model loaded") and "failed" in note and "\n" not in note
    assert panel.summary_box.note.isVisibleTo(panel)
    assert not pipeline.run_button.isEnabled() and "load" in pipeline.run_button.toolTip().lower()
    assert window.model_context().summary is None

    dialogs.clear()
    assert window.run_pipeline() is None and window.run_panel.job is None  # Ctrl+R and the Run page refuse
    assert len(dialogs) == 1 and "load" in dialogs[0].text().lower()
    assert window.run_panel.run() is None and window.run_panel.job is None

    dialogs.clear()
    _load(qtbot, window, tiny_llama_dir)
    assert pipeline.run_button.isEnabled() and not panel.summary_box.note.isVisibleTo(panel)
    assert panel.summary_box.values["layers"].text() == "2" and not dialogs


def test_unexpected_error_dialog_has_type_and_traceback(qtbot):
    try:
        raise ValueError("boom")
    except ValueError as exc:
        box = build_error_box(exc)
    assert box.windowTitle() == "Unexpected error"
    assert "ValueError" in box.text() and "boom" in box.text()
    assert "Traceback" in box.detailedText()
    studio = build_error_box(ModelLoadError("model not found: x"))
    assert studio.text() == "Model not found: x" and not studio.detailedText()


def test_worker_events_arrive_in_order_and_finished_carries_result(qtbot):
    sent = [Log("one"), Metric("loss", 1.5, step=0), Progress("work", 1, 2), Log("two")]

    def job():
        yield from sent
        return {"answer": 42}

    # Synchronously, no thread: the worker's own logic.
    worker, got = JobWorker(job), []
    worker.job_event.connect(got.append)
    worker.finished.connect(got.append)
    worker.run()
    assert got == [*sent, {"answer": 42}]

    # In a thread, through the handle, as the GUI uses it.
    # (the handle's signals are delivered by the GUI event loop, so connecting after start is safe)
    received, errors = [], []
    handle = start_job(job, on_event=received.append, on_errored=errors.append)
    with qtbot.waitSignal(handle.finished, timeout=10_000) as blocker:
        pass
    assert blocker.args == [{"answer": 42}] and received == sent and not errors
    assert handle.wait(10_000) and not handle.is_running()


def test_worker_throttles_progress(qtbot):
    def job():
        for done in range(10_001):
            yield Progress("slow stage", done, 10_000)
        yield Progress("next stage", 0, 5)

    worker, got = JobWorker(job), []
    worker.job_event.connect(got.append)
    worker.run()
    assert 900 <= len(got) <= 1_002
    assert got[-2].fraction == 1.0 and got[-1].stage == "next stage"


def test_worker_reports_any_exception(qtbot):
    def job():
        yield Log("about to fail")
        raise RuntimeError("kaput")

    worker, errors, finished = JobWorker(job), [], []
    worker.errored.connect(errors.append)
    worker.finished.connect(finished.append)
    worker.run()
    assert isinstance(errors[0], RuntimeError) and not finished


def test_cancel_running_job_closes_generator_and_emits_cancelled(qtbot):
    state = {"closed": False}

    def endless():
        try:
            while True:
                yield Log("tick")
                time.sleep(0.01)
        finally:
            state["closed"] = True

    worker_cancelled, errors, finished = [], [], []
    handle = start_job(endless, on_errored=errors.append, on_finished=finished.append)
    handle.worker.cancelled.connect(lambda: worker_cancelled.append(True))
    with qtbot.waitSignal(handle.job_event, timeout=10_000):
        pass
    with qtbot.waitSignal(handle.cancelled, timeout=10_000):
        handle.cancel()
    assert handle.wait(10_000)
    assert worker_cancelled == [True] and state["closed"] and not errors and not finished


def test_cancel_model_load_from_window(qtbot, window, dialogs, tiny_llama_dir):
    panel = window.model_panel
    panel.set_source(str(tiny_llama_dir))
    qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
    assert panel.is_busy() and not panel.load_button.isEnabled()
    with qtbot.waitSignal(panel.job.cancelled, timeout=LOAD_TIMEOUT_MS):
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.load_button.isEnabled())
    assert not dialogs and panel.result is None
    assert panel.status.text().startswith("Loading cancelled")


def test_drop_folder_loads_it(qtbot, window, dialogs, tiny_llama_dir):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tiny_llama_dir))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.model_panel.model_loaded, timeout=LOAD_TIMEOUT_MS):
        window.dropEvent(event)
    assert window.model_panel.source() == str(tiny_llama_dir) and not dialogs


def test_settings_persist_under_temp_home(qtbot, studio_home, tmp_path):
    first = MainWindow()
    qtbot.addWidget(first)
    first.model_panel.set_source(str(tmp_path))
    first.model_panel.set_task("sequence-classification")
    first.close()
    assert (studio_home / "settings.ini").is_file()
    assert app_settings().fileName() == str(studio_home / "settings.ini")
    second = MainWindow()
    qtbot.addWidget(second)
    assert second.model_panel.source() == str(tmp_path)
    assert second.model_panel.task() == "sequence-classification"


def test_smoke_test_flag_shows_window_and_exits_zero():
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-m", "gui", "--smoke-test"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "window shown" in done.stdout


def test_no_display_gives_a_clear_message_not_a_crash():
    from gui.app import missing_display_message

    assert "xvfb-run" in missing_display_message({}, "linux")
    assert missing_display_message({"DISPLAY": ":0"}, "linux") is None
    assert missing_display_message({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert missing_display_message({}, "darwin") is None
