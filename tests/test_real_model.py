"""The bundled SmolLM2-135M, for real (tens of seconds each; marked slow, but always run by make test)."""

import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.cli.commands import main
from core.data.samples import datasets_ready
from core.data.texts import load_texts, token_windows
from core.engine.recipe import recipe_from_text
from core.engine.runner import run_recipe
from core.eval.perplexity import perplexity
from core.events import LayerStat
from core.io.saving import save_model
from core.models.loading import gguf_cache_folder, load_model
from tests.helpers import collect

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not datasets_ready(), reason="bundled datasets missing: run `make data`")]


@pytest.fixture(scope="module")
def smollm(session_cache):
    import os

    from core import paths

    os.environ[paths.CACHE_ENV] = str(session_cache)
    return load_model("bundled:smollm2-135m")


def test_gguf_loads_and_caches(smollm):
    model = smollm.model
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert gguf_cache_folder(smollm.source_path).joinpath("model.safetensors").exists()
    started = time.perf_counter()
    again = load_model("bundled:smollm2-135m")
    assert time.perf_counter() - started < 10  # from the converted cache, not a second conversion
    ids = smollm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    assert torch.equal(again.model(ids).logits, model(ids).logits)


def test_perplexity_on_evaluation_text_is_sane(smollm):
    windows = token_windows(load_texts("bundled:wiki-evaluation"), smollm.tokenizer, 512, 6)
    result = perplexity(smollm.model, windows)
    assert windows.shape == (6, 512)
    assert 5 < result.perplexity < 40, result.perplexity  # a 135M model on Wikipedia prose


def test_save_and_reload_in_plain_transformers_same_logits(tmp_path, smollm):
    out = save_model(smollm.model, smollm.tokenizer, tmp_path / "copy", source_path=smollm.source_path)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    ids = smollm.tokenizer("Compression keeps quality when", return_tensors="pt").input_ids
    assert torch.equal(reloaded(ids).logits, smollm.model(ids).logits)


RECIPE = """
name: real magnitude
model: {source: "bundled:smollm2-135m"}
data: {sequence_length: 256}
evaluation: {max_windows: 3}
steps: [{technique: magnitude_prune, params: {sparsity: 0.3}}]
"""


def test_cancelled_run_leaves_nothing(tmp_path):
    source = load_model("bundled:smollm2-135m").source_path
    source_mtime = source.stat().st_mtime_ns
    job = run_recipe(recipe_from_text(RECIPE), tmp_path / "out")
    for event in job:
        if isinstance(event, LayerStat):
            job.close()
            break
    assert list(tmp_path.iterdir()) == []
    assert source.stat().st_mtime_ns == source_mtime


def test_magnitude_run_reports_perplexity_before_and_after(tmp_path):
    _, report = collect(run_recipe(recipe_from_text(RECIPE), tmp_path / "out"))
    before, after = report["before"]["perplexity"]["perplexity"], report["after"]["perplexity"]["perplexity"]
    assert after > before > 5
    assert report["after"]["nonzero_parameters"] < 0.8 * report["before"]["nonzero_parameters"]
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


def test_cli_inspect_bundled(capsys):
    assert main(["-q", "inspect", "bundled:smollm2-135m"]) == 0
    out = capsys.readouterr().out
    assert "134,515,008" in out and "model.layers.29.mlp.down_proj" in out
