"""The Run page's progress and cancelling (issue 16, item 3): a time left that never goes up unless it
says "revised", an overall bar at a phase's end when the step bar is full, Esc that asks before
throwing away more than a minute of work, and a cancelled run that names no output folder."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import re  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from core.events import Progress, StageStarted  # noqa: E402

TIMEOUT_MS = 120_000
# (title, planned seconds, seconds it takes, progress parts) of a run whose slow step follows a fast one
RUN = [
    ("Loading the model", "load", 3, 2, 0),
    ("Measuring the original", "measure original", 30, 0, 0),  # reused: no progress, no time
    ("Step 1 of 2: Magnitude pruning", "step 1: magnitude_prune", 10, 8, 1),
    ("Step 2 of 2: GPTQ", "step 2: gptq_quantize", 100, 130, 1),
    ("Measuring the result", "measure result", 30, 24, 2),
    ("Saving", "save", 3, 2, 0),
]


class _Estimate:
    """What the Pipeline page's pre-flight estimate carries (only the field the Run page reads)."""

    phase_seconds = [(name, planned) for _title, name, planned, _took, _parts in RUN]


def _seconds_left(text: str) -> float | None:
    """The overall label's time left in seconds: "about 2 min 05 s left" -> 125; None: estimating."""
    if "almost done" in text:
        return 0.0
    found = re.search(r"about (.+?) left", text)
    if not found:
        return None
    units = {"h": 3600, "min": 60, "s": 1}
    return float(sum(int(n) * units[u] for n, u in re.findall(r"(\d+) (h|min|s)\b", found.group(1))))


def test_time_left_never_grows_and_a_full_step_bar_means_that_phase_is_done(qtbot, monkeypatch):
    from core.engine.recipe import recipe_from_text
    from gui.screens.run import progress as run_progress
    from gui.screens.run.panel import RunPanel

    clock = [1000.0]
    monkeypatch.setattr(run_progress.time, "monotonic", lambda: clock[0])
    panel = RunPanel(estimate_source=lambda: _Estimate())
    qtbot.addWidget(panel)
    recipe = recipe_from_text("name: t\nmodel: {source: x}\nsteps:\n  - {technique: magnitude_prune}\n"
                              "  - {technique: gptq_quantize}\n")
    plan = panel._plan(recipe)
    assert plan[1] and [p.seconds for p in plan[0]] == [3, 30, 10, 100, 30, 3]  # the estimate's seconds
    panel.progress.start(2, plan)
    progress = panel.progress
    labels, at_full = [], []
    for position, (title, _name, _planned, took, parts) in enumerate(RUN, start=1):
        stage = StageStarted("step" if title.startswith("Step") else "other", title, position, len(RUN))
        panel.on_event(stage)
        if position == 5:  # step 2 ended with its bar full: the next phase starts where the bar stood
            assert progress.overall_bar.value() - at_full[-1][0] <= 10
        began = clock[0]
        while True:
            into = clock[0] - began
            if parts and took:
                share = min(1.0, into / took) * parts
                part = min(int(share), parts - 1)
                panel.on_event(Progress(f"part {part}", round((share - part) * 100), 100))
            progress.apply()  # the 100 ms bar timer
            progress.refresh()  # the 1 s label clock
            text = progress.overall_label.text()
            labels.append((clock[0], _seconds_left(text), "revised" in text, text))
            if progress.stage_bar.value() == 1000 and position == 4:
                at_full.append((progress.overall_bar.value(), progress.eta.model_remaining(clock[0])[0]))
            if into >= took:
                break
            clock[0] += 1.0
    shown = [(t, left, revised, text) for t, left, revised, text in labels if left is not None]
    assert shown[0][1] == pytest.approx(176, abs=1)  # the pre-flight estimate's 176 s, from the start
    revisions = 0
    for (_t0, before, _r0, _), (t1, after, revised, text) in zip(shown, shown[1:], strict=False):
        if after > before:
            assert revised, f"the time left went up at {t1 - 1000:.0f} s without saying so: {text}"
            revisions += 1
    assert revisions <= 1
    # Step 2's bar full: only measuring the result and saving are left, so the overall bar stands at
    # step 2's end (the old "stages done / stages" said 4 of 6 = 667 with minutes still to go).
    value, left = at_full[-1]
    elapsed = 2 + 0 + 8 + 130
    assert value >= round(1000 * elapsed / (elapsed + left)) - 1 and value > 700
    assert left < 60


@pytest.fixture
def busy_window(qtbot, tmp_path, request):
    """The main window with a pretend run going on for ``request.param`` minutes (no model: the job is a
    stand-in)."""
    yield from _busy_window(qtbot, tmp_path, request.param)


def _busy_window(qtbot, tmp_path, minutes: float):
    """The main window with a pretend run going on for ``minutes`` (no model: the job is a stand-in)."""
    from gui.main_window import MainWindow

    window = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()

    class Job:
        cancels, running = 0, True

        def is_running(self):
            return self.running

        def cancel(self):
            self.cancels += 1

        def wait(self):
            return True

    run = window.run_panel
    run.job = Job()
    run._started = time.monotonic() - minutes * 60
    run.cancel_button.setEnabled(True)
    yield window, run
    run.job.running = False


@pytest.fixture
def answers(monkeypatch):
    """QMessageBox.exec answered from a list (Yes/No), recording each box."""
    boxes, replies = [], []

    def exec_(box):
        boxes.append(box)
        return int(replies.pop(0))

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    return boxes, replies


@pytest.mark.parametrize("busy_window", [3], indirect=True)
def test_esc_after_a_minute_asks_and_keep_running_does_not_cancel(qtbot, busy_window, answers):
    boxes, replies = answers
    window, run = busy_window
    replies.append(QMessageBox.StandardButton.No)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert len(boxes) == 1 and run.job.cancels == 0
    box = boxes[0]
    assert box.windowTitle() == "Stop this run?" and "3 min 00 s of work will be lost" in box.text()
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.No)  # Enter keeps the run going
    assert run.cancel_button.isEnabled() and "Cancelling" not in run.status.text()
    # "Stop the run": cancelled; the button asks the same way (its tooltip says so)
    replies.append(QMessageBox.StandardButton.Yes)
    run.cancel_button.click()
    assert len(boxes) == 2 and run.job.cancels == 1 and "Cancelling" in run.status.text()
    assert "more than a minute" in run.cancel_button.toolTip()


@pytest.mark.parametrize("busy_window", [0.5], indirect=True)
def test_esc_in_the_first_minute_cancels_at_once(qtbot, busy_window, answers):
    boxes, _replies = answers
    window, run = busy_window
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert run.job.cancels == 1 and not boxes


@pytest.mark.parametrize("busy_window", [2], indirect=True)
def test_the_question_mentions_a_training_checkpoint(qtbot, monkeypatch, busy_window, answers, tmp_path):
    import core.engine.runner
    from gui.screens.run import panel as run_panel

    boxes, replies = answers
    _window, run = busy_window
    run._last_run = (object(), tmp_path / "out", "cpu")
    monkeypatch.setattr(run_panel, "trains", lambda recipe: True)
    monkeypatch.setattr(core.engine.runner, "has_resumable_checkpoint", lambda recipe, out: True)
    replies.append(QMessageBox.StandardButton.No)
    run.cancel()
    assert "checkpoint, which is kept: Resume training continues from it" in boxes[-1].text()
    monkeypatch.setattr(core.engine.runner, "has_resumable_checkpoint", lambda recipe, out: False)
    replies.append(QMessageBox.StandardButton.No)
    run.cancel()
    assert "not reached a checkpoint yet" in boxes[-1].text() and run.job.cancels == 0


def test_a_cancelled_run_names_no_output_folder(qtbot, monkeypatch, tmp_path, tiny_llama_dir, text_file):
    import gui.jobs
    from core.engine.recipe import load_recipe
    from core.history.store import History
    from gui.screens.run import panel as run_panel
    from gui.screens.run.panel import RunPanel
    from tests.helpers import slowed, write_recipe

    monkeypatch.setattr(gui.jobs, "run_pipeline", slowed(gui.jobs.run_pipeline, 0.05))
    opened = []
    monkeypatch.setattr(run_panel.QDesktopServices, "openUrl", lambda url: opened.append(url))
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file))
    panel = RunPanel()
    qtbot.addWidget(panel)
    out = tmp_path / "out"
    job = panel.start(recipe, out, "cpu")
    assert str(out) in panel.status.text()  # while it runs, it says where the result will go
    qtbot.waitUntil(lambda: panel.progress.position >= 2, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(job.cancelled, timeout=TIMEOUT_MS):
        panel.cancel()  # under a minute: no question
    qtbot.waitUntil(lambda: not panel.is_busy())
    assert not out.exists()
    for label in (panel.status, panel.summary, panel.progress.overall_label, panel.progress.stage_label):
        assert str(out) not in label.text() and out.name not in label.text(), label.text()
    assert not panel.open_button.isEnabled()
    panel.open_output()
    assert not opened
    record = History().runs()[0]
    assert record.status == "cancelled" and record.output == ""  # the History names no folder either
