"""The original is measured once: a second run on the same model files, data and settings reuses its numbers.

Issue 16, item 4: measuring the original was most of the waiting in a short run.  Anything that changes a
measurement (the model's files, the evaluation text, a setting) must measure it again.
"""

from __future__ import annotations

from core.engine.recipe import load_recipe
from core.engine.runner import run_recipe
from core.events import Log, Metric, Progress, StageStarted
from tests.helpers import collect, write_recipe


def _run(recipe_path, out):
    events, report = collect(run_recipe(load_recipe(recipe_path), out))
    stage, measured_before = None, False
    for event in events:
        if isinstance(event, StageStarted):
            stage = event.stage
        elif isinstance(event, Progress) and stage == "measure_before" and event.stage == "perplexity":
            measured_before = True
    reused = any(isinstance(e, Log) and "Reused the original's measurements" in e.message for e in events)
    metric = [e.value for e in events if isinstance(e, Metric) and e.name == "perplexity/before"]
    return report, measured_before, reused, metric


def test_a_second_run_reuses_the_originals_measurements(tmp_path, tiny_llama_dir, text_file):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file)
    first, measured, reused, metric = _run(recipe, tmp_path / "one")
    assert measured and not reused
    second, measured, reused, metric_again = _run(recipe, tmp_path / "two")
    assert reused and not measured
    assert second["before"]["perplexity"] == first["before"]["perplexity"]
    assert metric_again == metric == [first["before"]["perplexity"]["perplexity"]]  # the plots still get it
    assert second["before"]["measured_at"]


def test_a_changed_model_text_or_setting_is_measured_again(tmp_path, tiny_llama_dir, text_file):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file)
    _run(recipe, tmp_path / "first")
    # another setting that changes the measurement
    other = write_recipe(tmp_path / "r2.yaml", tiny_llama_dir, text_file, evaluation={"max_windows": 2})
    assert _run(other, tmp_path / "windows")[1]
    # the evaluation text changed on disk
    text_file.write_text(text_file.read_text() + "\nOne more line of evaluation text, quite different.\n")
    assert _run(recipe, tmp_path / "text")[1]
    # the model's weights rewritten (same size, different bytes)
    weights = next(tiny_llama_dir.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)
    weights.write_bytes(bytes(data))
    assert _run(recipe, tmp_path / "weights")[1]
    # and unchanged again: reused
    assert _run(recipe, tmp_path / "again")[2]
