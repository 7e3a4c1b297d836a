"""The runner end to end on a tiny model: events, report, saved folder, cancel and failure."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.data.texts import load_texts, token_windows
from core.engine import registry
from core.engine.recipe import load_recipe
from core.engine.runner import run_recipe
from core.errors import RecipeError
from core.eval.compare import compare_rows, read_output_folder
from core.eval.perplexity import perplexity
from core.events import LayerStat, Log, Metric, Progress, RunDone, StepDone
from tests.helpers import collect, folder_digest, write_recipe


@pytest.fixture
def recipe(tmp_path, tiny_llama_dir, text_file):
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file))


def test_run_end_to_end(tmp_path, recipe, tiny_llama_dir, text_file, tiny_tokenizer):
    source_before = folder_digest(tiny_llama_dir)
    out = tmp_path / "out"
    events, report = collect(run_recipe(recipe, out))

    kinds = {type(e) for e in events}
    assert {Progress, Metric, LayerStat, Log, StepDone, RunDone} <= kinds
    assert isinstance(events[-1], RunDone) and events[-1].output_dir == str(out.resolve())
    metric_names = {e.name for e in events if isinstance(e, Metric)}
    assert {"perplexity/before", "perplexity/after", "kl_to_teacher", "nonzero_parameters"} <= metric_names

    # The saved folder loads in plain transformers, is pruned, and its measured perplexity is the reported one.
    model = AutoModelForCausalLM.from_pretrained(out)
    up = model.model.layers[0].mlp.up_proj.weight
    assert (up == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)
    windows = token_windows(load_texts(str(text_file)), tiny_tokenizer, 16, 4)
    assert perplexity(model, windows).perplexity == pytest.approx(report["after"]["perplexity"]["perplexity"], rel=1e-5)
    assert report["before"]["perplexity"]["perplexity"] != report["after"]["perplexity"]["perplexity"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["after"]["bytes_on_disk"] == (out / "model.safetensors").stat().st_size
    assert "safetensors" in saved["after"]["on_disk_is"] and "folder" in saved["before"]["on_disk_is"]
    assert saved["steps"][0]["technique"] == "magnitude_prune" and saved["steps"][0]["notes"]
    assert load_recipe(out / "recipe.yaml").to_dict() == recipe.to_dict()
    assert folder_digest(tiny_llama_dir) == source_before


def test_cancel_leaves_nothing(tmp_path, recipe, tiny_llama_dir):
    source_before = folder_digest(tiny_llama_dir)
    out = tmp_path / "out"
    job = run_recipe(recipe, out)
    for event in job:
        if isinstance(event, LayerStat):
            job.close()  # the consumer cancels at a cancel point
            break
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert folder_digest(tiny_llama_dir) == source_before


def test_failing_step_leaves_nothing(tmp_path, recipe, monkeypatch):
    info = registry.get_technique("magnitude_prune")

    def broken(model, config, ctx):
        yield Log("about to fail")
        raise RuntimeError("boom")

    monkeypatch.setitem(registry._REGISTRY, "magnitude_prune",
                        registry.TechniqueInfo(info.name, info.title, info.family, info.summary, info.config_cls, broken))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        collect(run_recipe(recipe, out))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_no_enabled_steps_is_rejected(tmp_path, recipe):
    recipe.steps[0].enabled = False
    with pytest.raises(RecipeError, match="no enabled steps"):
        collect(run_recipe(recipe, tmp_path / "out"))


def test_gpu_only_step_rejected_on_cpu(tmp_path, recipe, monkeypatch):
    info = registry.get_technique("magnitude_prune")
    gpu_info = registry.TechniqueInfo(info.name, info.title, info.family, info.summary, info.config_cls,
                                      info.handler, registry.Needs(gpu=True))
    monkeypatch.setitem(registry._REGISTRY, "magnitude_prune", gpu_info)
    with pytest.raises(RecipeError, match="needs an NVIDIA GPU"):
        collect(run_recipe(recipe, tmp_path / "out"))


def test_classifier_run_reports_accuracy(tmp_path, tiny_bert, tiny_tokenizer):
    model_dir = tmp_path / "bert"
    tiny_bert.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    rows = ["text,label"] + [f"review number {i} was {'great' if i % 2 else 'awful'},{'fresh' if i % 2 else 'rotten'}"
                             for i in range(40)]
    (tmp_path / "labelled.csv").write_text("\n".join(rows))
    recipe_path = write_recipe(tmp_path / "r.yaml", model_dir, tmp_path / "labelled.csv",
                               model={"task": "sequence-classification"},
                               data={"labelled": str(tmp_path / "labelled.csv")})
    events, report = collect(run_recipe(load_recipe(recipe_path), tmp_path / "out"))
    assert 0.0 <= report["after"]["classification"]["accuracy"] <= 1.0
    assert "accuracy/after" in {e.name for e in events if isinstance(e, Metric)}
    assert "perplexity" not in report["after"]


def test_speed_and_samples_are_measured_when_asked(tmp_path, tiny_llama_dir, text_file):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file,
                                      evaluation={"speed": True, "prompts": ["The quick brown"]}))
    _, report = collect(run_recipe(recipe, tmp_path / "out"))
    assert report["before"]["speed"]["decode_tokens_per_s"] > 0 and report["after"]["speed"]["prefill_ms"] > 0
    assert [s["prompt"] for s in report["after"]["samples"]] == ["The quick brown"]
    assert report["before"]["samples"][0]["new_tokens"] > 0
    assert torch.get_num_threads() >= 1


def test_first_step_that_cannot_fit_the_model_is_rejected_before_measuring(tmp_path, tiny_llama_dir, text_file):
    path = write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file,
                        steps=[{"technique": "layer_drop", "params": {"layers_to_drop": 2}}])
    job = run_recipe(load_recipe(path), tmp_path / "out")
    seen = []
    with pytest.raises(RecipeError, match="every layer"):
        for event in job:
            seen.append(event)
    assert not any(isinstance(e, Metric) and e.name.startswith("perplexity") for e in seen)
    assert not (tmp_path / "out").exists()


def test_the_recipe_chooses_the_perplexity_convention_and_the_report_names_it(tmp_path, tiny_llama_dir, text_file,
                                                                               tiny_tokenizer):
    """lm-eval's convention predicts every token of the text (here one document, as a .txt is), where the
    default drops each window's first; the report and the comparison both say which was used."""
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file,
                                      evaluation={"max_windows": 0, "perplexity_convention": "lm-eval"}))
    _, report = collect(run_recipe(recipe, tmp_path / "out"))
    measured = report["before"]["perplexity"]
    text_tokens = len(tiny_tokenizer(load_texts(str(text_file))[0], add_special_tokens=False)["input_ids"])
    assert measured["convention"] == "lm-eval" and measured["tokens"] == text_tokens
    assert "lm-eval's convention" in measured["method"]
    row = {r.key: r for r in compare_rows(read_output_folder(tmp_path / "out").report)}["perplexity"]
    assert "lm-eval's convention" in row.explanation
    assert recipe.evaluation.perplexity_convention == "lm-eval"
    with pytest.raises(RecipeError, match="perplexity_convention"):
        load_recipe(write_recipe(tmp_path / "bad.yaml", tiny_llama_dir, text_file,
                                 evaluation={"perplexity_convention": "mine"}))


def test_the_recipe_scores_its_tasks_before_and_after(tmp_path, tiny_llama_dir, text_file):
    """Tasks named in the recipe (here a person's own multiple-choice file) are scored on the original and the
    result; the file is one of the run's inputs, and an unknown task name is refused before any work."""
    questions = tmp_path / "quiz.jsonl"
    questions.write_text("".join(json.dumps({"question": f"Which number is {i}?", "choices": [str(i), str(i + 1)],
                                             "answer": 0}) + "\n" for i in range(6)))
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file,
                                      evaluation={"tasks": [str(questions)], "task_limit": 0}))
    events, report = collect(run_recipe(recipe, tmp_path / "out"))
    assert report["steps"][0]["family"] == "pruning"  # what Compare's size advice reads
    for label in ("before", "after"):
        score = report[label]["tasks"][str(questions)]
        assert (score["n"], score["rows_total"], score["headline"], score["chance"]) == (6, 6, "acc", 0.5)
        metric = [e for e in events if isinstance(e, Metric) and e.name == f"task/{questions}/{label}"]
        assert [m.value for m in metric] == [score["acc"]]
    with pytest.raises(RecipeError, match="Unknown task"):
        load_recipe(write_recipe(tmp_path / "bad.yaml", tiny_llama_dir, text_file, evaluation={"tasks": ["mmlu"]}))
    with pytest.raises(Exception, match="task file"):  # the output may not replace a file the run reads
        collect(run_recipe(recipe, questions, overwrite=True))
