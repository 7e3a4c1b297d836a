"""Overall and per-stage progress: the runner's stage events, the ETA math, the Run page's two bars."""

import pytest

from core.engine.eta import EtaTracker, estimate_remaining, eta_text
from core.engine.recipe import load_recipe
from core.engine.runner import run_recipe
from core.events import Progress, StageStarted, event_to_dict
from tests.conftest import SAMPLE_TEXT
from tests.helpers import collect, write_recipe


def test_estimate_needs_signal_then_extrapolates_the_rate():
    assert estimate_remaining([]) is None
    assert estimate_remaining([(0.0, 0.0), (1.0, 0.5)]) is None  # only 1 s watched
    assert estimate_remaining([(0.0, 0.0), (10.0, 0.01)]) is None  # moved only 1%
    # 25% in 10 s: 75% left at 2.5%/s is 30 s.
    assert estimate_remaining([(0.0, 0.0), (5.0, 0.1), (10.0, 0.25)]) == pytest.approx(30.0)
    assert estimate_remaining([(0.0, 0.0), (10.0, 1.0)]) == 0.0


def test_tracker_window_restart_and_stall():
    tracker = EtaTracker(window_s=20)
    for second in range(0, 101, 5):  # a slow start (0.5%/s for 50 s), then 1%/s up to 75% at 100 s
        tracker.add(float(second), second * 0.005 if second <= 50 else 0.25 + (second - 50) * 0.01)
    # The last 20 s moved at 1%/s, so the estimate follows the recent rate, not the whole-run average.
    assert tracker.remaining() == pytest.approx(25.0 / 1.0, rel=0.05)
    # No news for 25 s: the rate over the window is lower, the time left grows.
    assert tracker.remaining(now=125.0) > tracker.remaining()
    tracker.add(130.0, 0.1)  # fraction went back: a new bar, start over
    assert len(tracker.samples) == 1 and tracker.remaining() is None


def test_eta_text():
    assert eta_text(None, str) == "estimating…"
    assert eta_text(0.0, str) == "almost done"
    assert eta_text(90.0, lambda s: f"{s:.0f} s") == "about 90 s left"


def test_runner_announces_every_stage_in_order(tmp_path, tiny_llama_dir):
    text = tmp_path / "text.txt"
    text.write_text(SAMPLE_TEXT)
    path = write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text,
                        steps=[{"technique": "magnitude_prune", "params": {"sparsity": 0.3}},
                               {"technique": "magnitude_prune", "params": {"sparsity": 0.5}, "enabled": False},
                               {"technique": "magnitude_prune", "params": {"sparsity": 0.5}}])
    events, _ = collect(run_recipe(load_recipe(path), tmp_path / "out"))
    stages = [e for e in events if isinstance(e, StageStarted)]
    assert [s.stage for s in stages] == ["load", "measure_before", "step", "step", "measure_after", "save"]
    assert [s.position for s in stages] == [1, 2, 3, 4, 5, 6] and {s.total for s in stages} == {6}
    steps = [s for s in stages if s.stage == "step"]
    assert [(s.step_index, s.step_number, s.total_steps) for s in steps] == [(0, 1, 2), (2, 2, 2)]
    assert steps[1].title == "Step 2 of 2: Magnitude pruning" and steps[1].technique == "magnitude_prune"
    # Progress of a step comes after its stage event; the event serialises like the others.
    first_step_progress = next(i for i, e in enumerate(events) if isinstance(e, Progress) and e.step_index == 0)
    assert events.index(steps[0]) < first_step_progress
    assert event_to_dict(steps[0])["type"] == "StageStarted"


def test_run_progress_widget_overall_and_stage(qtbot, monkeypatch):
    from gui.screens.run import progress as run_progress
    from gui.screens.run.progress import RunProgress

    clock = [100.0]
    monkeypatch.setattr(run_progress.time, "monotonic", lambda: clock[0])
    widget = RunProgress()
    qtbot.addWidget(widget)
    widget.start(steps=2)  # 6 stages, no pre-flight plan: default weights
    assert "estimating…" in widget.overall_text(clock[0])
    widget.stage_started(StageStarted("step", "Step 1 of 2: GPTQ", 3, 6, 0, "gptq", 1, 2))
    assert widget.stage_bar.value() == 0
    for i in range(11):
        clock[0] = 100.0 + i
        widget.progress(Progress("Calibrating blocks", i, 10, step_index=0))
    assert widget.stage_bar.value() < 1000  # bars repaint on their 100 ms timer, not per event
    widget.apply()
    assert widget.stage_bar.value() == 1000
    # The step took 10 s of a plan of 30: the later phases are expected 3 times faster than planned too,
    # and the overall bar stands where step 1 ends: 10 s done of 10 + 10 + 2 * 20 / 3 + 3 s.
    left = 30 * (1 / 3) + 20 * (1 / 3) + 3
    assert widget.eta.remaining == pytest.approx(left, abs=0.5)
    assert widget.overall_bar.value() == pytest.approx(1000 * 10 / (10 + left), abs=2)
    widget.refresh()
    text = widget.overall_text(clock[0])
    assert "Step 1 of 2: GPTQ (stage 3 of 6)" in text and f"{widget.overall:.0%}" in text and "left" in text
    widget.stage_started(StageStarted("step", "Step 2 of 2: Wanda", 4, 6, 1, "wanda", 2, 2))
    clock[0] += 1
    widget.progress(Progress("Calibrating blocks", 1, 10, step_index=1))
    assert widget.stage_text(clock[0]).startswith("Calibrating blocks: 10%, estimating…")
    widget.finish("Done in 12 s", "Finished")
    assert widget.overall_bar.value() == 1000 and not widget.clock.isActive()
