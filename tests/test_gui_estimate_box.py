"""The Pipeline page's estimate box says what the run really does: parameters kept by quantization, the
stored format per kind of layer, and a time from the forward pass timed when the model loaded."""

from __future__ import annotations

import re
from pathlib import Path

from core.engine.recipe import load_recipe
from core.engine.throughput import Throughput, keep_throughput, throughput_key, torch_threads
from gui.screens.pipeline.estimate_box import EstimateBox
from tests.test_estimate import SUMMARY

PRESETS = Path(__file__).resolve().parents[1] / "resources" / "presets"
SOURCE = "bundled:smollm2-135m"


def _box(qtbot, preset: str) -> str:
    key = throughput_key(SOURCE, SUMMARY.parameters, SUMMARY.dtype, "cpu", torch_threads())
    keep_throughput(key, Throughput(0.35, 256, SUMMARY.parameters, "cpu", 2))  # what the load job keeps
    box = EstimateBox()
    qtbot.addWidget(box)
    box.show_estimate(SUMMARY, load_recipe(PRESETS / preset), "cpu", None)
    return re.sub(r"<[^>]+>", "", box.label.text())


def test_gptq_preset_keeps_the_parameter_count_and_names_the_packed_format(qtbot):
    text = _box(qtbot, "gptq-4bit-laptop.yaml")
    assert "134.5 M now, the same count after" in text
    assert "4-bit packed (GPTQ) + bfloat16 for the rest" in text
    assert "(bfloat16)" not in text


def test_quick_magnitude_preset_takes_seconds_here(qtbot):
    text = _box(qtbot, "quick-magnitude-30.yaml")
    time_line = next(line for line in text.split("Time:")[1:])
    assert re.match(r" about \d+ s on cpu; the step ", time_line), time_line  # seconds, not minutes
    assert "non-zero" in text  # 30% zeros: fewer non-zero weights, same parameter count
