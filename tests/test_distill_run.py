"""Distillation through the runner and the CLI: recovery with the original as teacher, cancel + --resume."""

from __future__ import annotations

import json

import pytest
import yaml

from core.cli.commands import main
from core.engine.recipe import load_recipe, recipe_from_text
from core.engine.runner import checkpoint_root, run_recipe
from core.errors import RecipeError
from core.events import Metric, StepDone, drain
from tests.conftest import SAMPLE_TEXT
from tests.helpers import collect


@pytest.fixture
def recipe_file(tmp_path, tiny_llama_dir):
    text = tmp_path / "text.txt"
    text.write_text((SAMPLE_TEXT + "\n\n") * 3, encoding="utf-8")
    recipe = {"name": "distil tiny", "model": {"source": str(tiny_llama_dir)},
              "data": {"calibration": str(text), "evaluation": str(text), "sequence_length": 16,
                       "calibration_windows": 8},
              "evaluation": {"max_windows": 4},
              "steps": [{"technique": "layer_drop", "params": {"layers_to_drop": 1}},
                        {"technique": "distill_causal_lm",
                         "params": {"student": "current", "max_steps": 6, "eval_every": 2, "batch_size": 4,
                                    "learning_rate": 0.003, "train_windows": 24, "validation_windows": 4}}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def test_cli_runs_a_distillation_recipe(recipe_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["-q", "run", str(recipe_file), "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    step = report["steps"][1]
    assert step["technique"] == "distill_causal_lm" and step["metrics"]["steps"] == 6
    assert report["after"]["parameters"] < report["before"]["parameters"]
    assert not checkpoint_root(load_recipe(recipe_file), out).exists()  # cleaned up after the save


def test_cancelled_run_resumes_from_its_checkpoint(recipe_file, tmp_path):
    recipe = load_recipe(recipe_file)
    out = tmp_path / "out"
    job = run_recipe(recipe, out)
    for event in job:
        if isinstance(event, Metric) and event.name == "loss/total" and event.step == 3:
            break
    job.close()
    assert not out.exists() and checkpoint_root(recipe, out).exists()
    job = run_recipe(recipe, out, resume=True)
    events, report = collect(job)
    steps = [e.step for e in events if isinstance(e, Metric) and e.name == "loss/total"]
    assert steps == [3, 4, 5, 6]
    assert report["steps"][1]["metrics"]["resumed_from_step"] == 2
    assert any(isinstance(e, StepDone) for e in events) and out.is_dir()


def test_named_student_with_another_tokenizer_is_refused(tmp_path, tiny_llama_dir):
    from transformers import AutoTokenizer

    other = tmp_path / "other"
    import shutil

    shutil.copytree(tiny_llama_dir, other)
    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.add_tokens(["zebra-token"])
    tokenizer.save_pretrained(other)
    text = tmp_path / "t.txt"
    text.write_text((SAMPLE_TEXT + "\n\n") * 3, encoding="utf-8")
    recipe = recipe_from_text(yaml.safe_dump({
        "model": {"source": str(tiny_llama_dir)},
        "data": {"calibration": str(text), "evaluation": str(text), "sequence_length": 16},
        "evaluation": {"perplexity": False, "kl_to_teacher": False},
        "steps": [{"technique": "distill_causal_lm",
                   "params": {"student": "model", "student_model": str(other), "max_steps": 1,
                              "train_windows": 8, "validation_windows": 2}}]}))
    with pytest.raises(RecipeError, match="different tokenizer"):
        drain(run_recipe(recipe, tmp_path / "out"))


def test_named_student_replaces_the_model(tmp_path, tiny_llama_dir, tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_llama_dir)
    config.num_hidden_layers = 1
    student_dir = tmp_path / "student"
    LlamaForCausalLM(config).save_pretrained(student_dir)
    tiny_tokenizer.save_pretrained(student_dir)
    text = tmp_path / "t.txt"
    text.write_text((SAMPLE_TEXT + "\n\n") * 3, encoding="utf-8")
    recipe = recipe_from_text(yaml.safe_dump({
        "model": {"source": str(tiny_llama_dir)},
        "data": {"calibration": str(text), "evaluation": str(text), "sequence_length": 16},
        "evaluation": {"max_windows": 2},
        "steps": [{"technique": "distill_causal_lm",
                   "params": {"student": "model", "student_model": str(student_dir), "max_steps": 2,
                              "train_windows": 8, "validation_windows": 2}}]}))
    report = drain(run_recipe(recipe, tmp_path / "out"))
    assert report["after"]["parameters"] < report["before"]["parameters"]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 1
