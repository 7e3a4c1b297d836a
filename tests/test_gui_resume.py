"""The Run page offers "Resume training" after a distillation run is cancelled past a checkpoint."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from core.engine.recipe import recipe_from_text  # noqa: E402
from core.engine.runner import checkpoint_root, has_resumable_checkpoint  # noqa: E402
from gui.screens.run.panel import RunPanel  # noqa: E402
from tests.conftest import SAMPLE_TEXT  # noqa: E402

TIMEOUT_MS = 300_000


@pytest.fixture
def recipe(tmp_path, tiny_llama_dir):
    import yaml

    text = tmp_path / "text.txt"
    text.write_text((SAMPLE_TEXT + "\n\n") * 3, encoding="utf-8")
    return recipe_from_text(yaml.safe_dump({
        "name": "distil tiny", "model": {"source": str(tiny_llama_dir)},
        "data": {"calibration": str(text), "evaluation": str(text), "sequence_length": 16, "calibration_windows": 8},
        "evaluation": {"max_windows": 4},
        "steps": [{"technique": "layer_drop", "params": {"layers_to_drop": 1}},
                  {"technique": "distill_causal_lm",
                   "params": {"student": "current", "max_steps": 8, "eval_every": 2, "batch_size": 4,
                              "learning_rate": 0.003, "train_windows": 24, "validation_windows": 4}}]}))


@pytest.fixture
def slowed(monkeypatch):
    """Each engine event takes 50 ms, so the tiny run can be caught between two checkpoints."""
    import gui.jobs

    real = gui.jobs.run_pipeline

    def slow(*args):
        job = real(*args)
        try:
            while True:
                event = next(job)
                time.sleep(0.05)
                yield event
        except StopIteration as stop:
            return stop.value
        finally:
            job.close()

    monkeypatch.setattr(gui.jobs, "run_pipeline", slow)


def test_cancelled_training_resumes_from_its_checkpoint(qtbot, recipe, tmp_path, slowed, monkeypatch):
    shown: list[QMessageBox] = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: shown.append(box) or int(QMessageBox.StandardButton.Ok))
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.show()
    out = tmp_path / "out"
    assert panel.resume_button.isHidden()
    trained: list[int] = []  # training steps seen, from the live loss events
    show_event = panel.on_event
    panel.on_event = lambda event: (trained.append(event.step) if getattr(event, "name", "") == "loss/total"
                                    else None, show_event(event))
    job = panel.start(recipe, out, "cpu")
    qtbot.waitUntil(lambda: max(trained, default=0) >= 3, timeout=TIMEOUT_MS)  # past the step-2 checkpoint
    with qtbot.waitSignal(job.cancelled, timeout=TIMEOUT_MS):
        panel.cancel()
    qtbot.waitUntil(lambda: not panel.is_busy())
    assert not out.exists() and panel.can_resume()
    assert panel.resume_button.isVisible() and "Resume training" in panel.summary.text()

    with qtbot.waitSignal(panel.run_finished, timeout=TIMEOUT_MS) as finished:
        panel.resume_button.click()
    qtbot.waitUntil(lambda: not panel.is_busy())
    metrics = finished.args[0]["steps"][1]["metrics"]
    assert metrics["resumed_from_step"] >= 2 and metrics["steps"] == 8
    assert out.is_dir() and panel.resume_button.isHidden() and not shown
    assert not checkpoint_root(recipe, out).exists()  # a finished run cleans its checkpoints up


def test_run_after_a_cancel_starts_over_and_discards_the_checkpoint(qtbot, recipe, tmp_path, slowed):
    panel = RunPanel()
    qtbot.addWidget(panel)
    out = tmp_path / "out"
    job = panel.start(recipe, out, "cpu")
    qtbot.waitUntil(lambda: has_resumable_checkpoint(recipe, out), timeout=TIMEOUT_MS)
    with qtbot.waitSignal(job.cancelled, timeout=TIMEOUT_MS):
        panel.cancel()
    qtbot.waitUntil(lambda: not panel.is_busy())
    job = panel.start(recipe, tmp_path / "elsewhere", "cpu")
    assert not checkpoint_root(recipe, out).exists()
    job.cancel_and_wait()
