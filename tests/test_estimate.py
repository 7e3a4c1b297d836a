"""The pre-flight estimate (gui/screens/pipeline/estimate.py is plain arithmetic: no Qt needed to test it)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from core.engine.recipe import Recipe, Step
from core.engine.registry import get_technique
from gui.screens.pipeline.estimate import estimate

SUMMARY = SimpleNamespace(parameters=100_000_000, bytes_in_memory=400_000_000, hidden_size=576, num_layers=30)


def _recipe(technique: str, **params) -> Recipe:
    recipe = Recipe.from_dict({"model": {"source": "some/folder"}})
    info = get_technique(technique)
    recipe.steps = [Step(info.name, info.config_cls(**params))]
    return recipe


def test_owl_costs_one_more_calibration_pass_than_uniform():
    uniform = estimate(SUMMARY, _recipe("wanda_prune", sparsity=0.5), "cpu", None)
    owl = estimate(SUMMARY, _recipe("wanda_prune", sparsity=0.5, schedule="owl"), "cpu", None)
    data = Recipe().data
    one_pass = 2 * SUMMARY.parameters * data.sequence_length * data.calibration_windows / 1e10
    assert owl.seconds - uniform.seconds == pytest.approx(one_pass) and one_pass > 0
    assert owl.output_bytes == uniform.output_bytes


def test_memory_that_does_not_fit_is_flagged():
    recipe = _recipe("magnitude_prune", sparsity=0.5)
    assert estimate(SUMMARY, recipe, "cpu", None).fits
    small = estimate(SUMMARY, recipe, "cpu", 100_000_000)
    assert not small.fits and small.peak_bytes > 400_000_000


def test_the_saved_format_is_named_as_it_will_be_written():
    summary = SimpleNamespace(**vars(SUMMARY), dtype="float32")
    bundled = Recipe.from_dict({"model": {"source": "bundled:smollm2-135m"}})
    assert estimate(summary, bundled, "cpu", None).output_dtype == "bfloat16"  # auto saves a GGUF as bfloat16
    folder = _recipe("magnitude_prune")
    assert estimate(summary, folder, "cpu", None).output_dtype == "float32"
    folder.output.dtype = "float16"
    assert estimate(summary, folder, "cpu", None).output_dtype == "float16"


def test_dynamic_int8_smoothing_costs_one_pass_and_the_file_keeps_its_size():
    smoothed = estimate(SUMMARY, _recipe("dynamic_int8", smoothing=0.75, smoothing_windows=4096), "cpu", None)
    plain = estimate(SUMMARY, _recipe("dynamic_int8", smoothing=0.0), "cpu", None)
    data = Recipe().data
    one_pass = 2 * SUMMARY.parameters * data.sequence_length * data.calibration_windows / 1e10
    assert smoothed.seconds - plain.seconds == pytest.approx(one_pass)
    assert smoothed.output_bytes == plain.output_bytes == SUMMARY.bytes_in_memory
    assert any("not smaller" in note for note in plain.notes)
    assert not any("guesses" in note for note in plain.notes)
