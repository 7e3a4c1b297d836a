"""OWL's outlier-weighted schedule wired into Wanda and SparseGPT: first pass, per-block sparsity, end to end."""

import pytest
import torch

from core.engine.params import config_from_dict
from core.engine.recipe import DataSpec, Recipe, load_recipe
from core.engine.runner import RunContext, run_recipe
from core.errors import RecipeError
from core.events import LayerStat, drain
from core.techniques.prune.data_aware import block_outlier_ratios, block_sparsities
from core.techniques.prune.sparsegpt import SparseGPTConfig, apply_sparsegpt_prune
from core.techniques.prune.wanda import WandaConfig, apply_wanda_prune
from tests.helpers import collect, write_recipe


@pytest.fixture
def ctx(tiny_tokenizer, text_file):
    recipe = Recipe(data=DataSpec(calibration=str(text_file), sequence_length=16, calibration_windows=4))
    return RunContext(recipe, tiny_tokenizer, "cpu")


def _add_outliers(model, block=1, count=40, scale=60.0):
    """Make a few weights of one block's Linears huge: that block gets many Wanda-score outliers."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for linear in (m for m in model.model.layers[block].modules() if isinstance(m, torch.nn.Linear)):
            flat = linear.weight.view(-1)
            flat[torch.randperm(flat.numel(), generator=g)[:count]] *= scale


@pytest.mark.parametrize("cls", [WandaConfig, SparseGPTConfig])
def test_configs_share_schedule_settings_and_refuse_owl_with_patterns(cls):
    config = config_from_dict(cls, {"schedule": "owl", "sparsity": 0.7})
    assert (config.owl_lambda, config.owl_m) == (0.08, 5.0)  # the paper's defaults
    for pattern in ("2:4", "4:8"):
        with pytest.raises(RecipeError, match=f"{pattern} pattern fixes the sparsity.*'uniform'"):
            config_from_dict(cls, {"schedule": "owl", "pattern": pattern})
    with pytest.raises(RecipeError, match="schedule"):
        config_from_dict(cls, {"schedule": "outliers"})
    with pytest.raises(RecipeError, match="owl_lambda"):
        config_from_dict(cls, {"schedule": "owl", "owl_lambda": 0.9})
    with pytest.raises(RecipeError, match="sparsity above 0"):
        config_from_dict(cls, {"schedule": "owl", "sparsity": 0.0})


def test_first_pass_measures_outliers_without_changing_the_model(tiny_llama, ctx):
    _add_outliers(tiny_llama)
    before = {n: p.detach().clone() for n, p in tiny_llama.named_parameters()}
    events, ratios = collect(block_outlier_ratios(tiny_llama, ctx, targets=["*"], ignore=["lm_head"]))
    assert list(ratios) == ["model.layers.0", "model.layers.1"]
    assert ratios["model.layers.1"] > ratios["model.layers.0"] >= 0
    assert [e.layer for e in events if isinstance(e, LayerStat) and e.name == "outlier_ratio"] == list(ratios)
    assert all(torch.equal(p, before[n]) for n, p in tiny_llama.named_parameters())


def test_schedule_mean_is_target_and_outlier_block_is_pruned_less(tiny_llama, ctx):
    _add_outliers(tiny_llama)
    config = config_from_dict(WandaConfig, {"schedule": "owl", "sparsity": 0.6, "owl_lambda": 0.1})
    events, schedule = collect(block_sparsities(tiny_llama, ctx, config))
    sparsity = schedule["sparsity"]
    assert sum(sparsity.values()) / len(sparsity) == pytest.approx(0.6)
    assert sparsity["model.layers.1"] == pytest.approx(0.5) and sparsity["model.layers.0"] == pytest.approx(0.7)
    targets = {e.layer: e.value for e in events if isinstance(e, LayerStat) and e.name == "target_sparsity"}
    assert targets == sparsity
    uniform = config_from_dict(WandaConfig, {"sparsity": 0.6})
    assert drain(block_sparsities(tiny_llama, ctx, uniform)) is None


@pytest.mark.parametrize("handler, cls", [(apply_wanda_prune, WandaConfig), (apply_sparsegpt_prune, SparseGPTConfig)])
def test_handlers_prune_each_block_to_its_owl_sparsity(tiny_llama, ctx, handler, cls):
    _add_outliers(tiny_llama)
    config = config_from_dict(cls, {"schedule": "owl", "sparsity": 0.5, "owl_lambda": 0.1})
    events, report = collect(handler(tiny_llama, config, ctx))
    by_block = {}
    for row in report.layers:
        by_block.setdefault(row["block"], []).append(row)
        assert row["sparsity"] == pytest.approx(row["target_sparsity"], abs=0.02)
    assert by_block["model.layers.0"][0]["target_sparsity"] == pytest.approx(0.6)
    assert by_block["model.layers.1"][0]["target_sparsity"] == pytest.approx(0.4)
    assert report.metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert report.metrics["schedule"] == "owl" and report.metrics["block_sparsity_max"] == pytest.approx(0.6)
    assert "OWL" in report.summary and any("OWL schedule" in note for note in report.notes)
    names = {e.name for e in events if isinstance(e, LayerStat)}
    assert {"outlier_ratio", "target_sparsity", "sparsity"} <= names


@pytest.mark.parametrize("technique", ["wanda_prune", "sparsegpt_prune"])
def test_owl_from_a_recipe_reaches_the_global_target(tmp_path, tiny_llama_dir, text_file, technique):
    path = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file,
                        steps=[{"technique": technique, "params": {"sparsity": 0.5, "schedule": "owl"}}],
                        evaluation={"kl_to_teacher": False})
    events, report = collect(run_recipe(load_recipe(path), tmp_path / "out"))
    step = report["steps"][0]
    assert step["metrics"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert step["metrics"]["schedule"] == "owl"
    per_layer = [e for e in events if isinstance(e, LayerStat) and e.name == "sparsity"]
    assert len(per_layer) == 14
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    zeros = sum(int((m.weight == 0).sum()) for n, m in reloaded.named_modules()
                if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    total = sum(m.weight.numel() for n, m in reloaded.named_modules()
                if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    assert zeros / total == pytest.approx(0.5, abs=0.01)
