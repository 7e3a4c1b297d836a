"""Every pruning method from a recipe through the CLI: the folder reloads with the logits of the same step
applied in this process, per-layer figures are emitted, and nonsense is one clear error line."""

import pytest
import torch

from core.cli.commands import main
from core.engine.recipe import load_recipe
from core.engine.registry import get_technique
from core.engine.runner import RunContext, run_recipe
from core.events import LayerStat, drain
from core.models.loading import load_model
from tests.helpers import collect, write_recipe

METHODS = [  # (technique, params, per-layer figure each step emits, loads in plain transformers)
    ("magnitude_prune", {"sparsity": 0.5}, "sparsity", True),
    ("magnitude_prune", {"sparsity": 0.5, "scope": "global", "save_format": "sparse"}, "sparsity", False),
    ("wanda_prune", {"sparsity": 0.5}, "sparsity", True),
    ("wanda_prune", {"sparsity": 0.6, "schedule": "owl"}, "sparsity", True),
    ("wanda_prune", {"pattern": "2:4", "save_format": "sparse"}, "sparsity", False),
    ("sparsegpt_prune", {"sparsity": 0.5}, "sparsity", True),
    ("sparsegpt_prune", {"pattern": "4:8", "block_size": 32}, "sparsity", True),
    ("mlp_prune", {"reduction": 0.25}, "removed_importance", True),
    ("attention_prune", {"kv_heads_to_remove": 1}, "removed_importance", True),
    ("layer_drop", {"layers_to_drop": 1}, "block_influence", True),
]



def _ids():
    return torch.tensor([[5, 9, 14, 3, 22, 7, 30, 11, 2, 17, 8, 25]])


@pytest.mark.parametrize("technique, params, figure, plain", METHODS,
                         ids=[f"{t}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for t, p, _, _ in METHODS])
def test_cli_run_reloads_with_the_same_logits(tmp_path, tiny_llama_dir, text_file, technique, params, figure,
                                              plain, capsys):
    recipe_path = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file,
                               steps=[{"technique": technique, "params": params}],
                               evaluation={"kl_to_teacher": False})
    assert main(["-q", "run", str(recipe_path), "-o", str(tmp_path / "out")]) == 0
    assert "After" in capsys.readouterr().out

    recipe = load_recipe(recipe_path)  # the same step, applied here to a fresh copy of the source
    loaded = load_model(str(tiny_llama_dir))
    step = recipe.steps[0]
    job = get_technique(technique).handler(loaded.model, step.config, RunContext(recipe, loaded.tokenizer, "cpu"))
    events, _ = collect(job)
    assert any(isinstance(e, LayerStat) and e.name == figure for e in events)
    with torch.no_grad():
        expected = loaded.model(_ids()).logits
        assert torch.equal(load_model(str(tmp_path / "out")).model(_ids()).logits, expected)
        if plain:
            from transformers import AutoModelForCausalLM

            plain_model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
            assert torch.equal(plain_model(_ids()).logits, expected)


def test_per_layer_sparsity_events_cover_every_target(tmp_path, tiny_llama_dir, text_file):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file,
                                      steps=[{"technique": "wanda_prune", "params": {"sparsity": 0.5}}],
                                      evaluation={"kl_to_teacher": False}))
    events, report = collect(run_recipe(recipe, tmp_path / "out"))
    stats = {e.layer: e.value for e in events if isinstance(e, LayerStat) and e.name == "sparsity"}
    assert len(stats) == 14 and all(v == pytest.approx(0.5) for v in stats.values())
    assert {row["layer"] for row in report["steps"][0]["layers"]} == set(stats)


@pytest.mark.parametrize("technique, params, message", [
    ("wanda_prune", {"sparsity": 1.2}, "sparsity"),
    ("sparsegpt_prune", {"pattern": "3:2"}, "3:2"),
    ("wanda_prune", {"pattern": "2:4", "schedule": "owl"}, "fixes the sparsity"),
    ("magnitude_prune", {"sparsity": -0.1}, "sparsity"),
    ("mlp_prune", {"reduction": 1.0}, "reduction"),
    ("layer_drop", {"layers_to_drop": 2}, "would remove every layer"),
    ("attention_prune", {"kv_heads_to_remove": 2}, "would remove every attention head"),
    ("mlp_prune", {"reduction": 0.01, "multiple_of": 64}, "removes nothing"),
])
def test_cli_rejects_nonsense_with_one_line_and_no_output(tmp_path, tiny_llama_dir, text_file, technique, params,
                                                         message, capsys):
    recipe_path = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file,
                               steps=[{"technique": technique, "params": params}])
    assert main(["-q", "run", str(recipe_path), "-o", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("technique, params", [("layer_drop", {"layers_to_drop": 2}),
                                               ("attention_prune", {"kv_heads_to_remove": 2}),
                                               ("wanda_prune", {"pattern": "2:4", "targets": ["*nothing*"]})])
def test_model_checks_run_before_any_calibration(tiny_llama, tiny_tokenizer, technique, params):
    """Settings that cannot fit this model fail in the handler's first line, before data is read."""
    from core.engine.params import config_from_dict
    from core.engine.recipe import DataSpec, Recipe
    from core.errors import RecipeError

    info = get_technique(technique)
    config = config_from_dict(info.config_cls, params)
    ctx = RunContext(Recipe(data=DataSpec(calibration="/no/such/file.txt")), tiny_tokenizer, "cpu")
    with pytest.raises(RecipeError):
        config.check_model(tiny_llama)
    with pytest.raises(RecipeError):
        drain(info.handler(tiny_llama, config, ctx))  # a data error would mean calibration started first


def test_recipe_yaml_round_trips_the_schedule(tmp_path, tiny_llama_dir, text_file):
    path = write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file,
                        steps=[{"technique": "sparsegpt_prune",
                                "params": {"sparsity": 0.7, "schedule": "owl", "owl_lambda": 0.05}}])
    recipe = load_recipe(path)
    assert (recipe.steps[0].config.schedule, recipe.steps[0].config.owl_lambda) == ("owl", 0.05)
    saved = tmp_path / "again.yaml"
    recipe.save(saved)
    again = load_recipe(saved).steps[0].config
    assert (again.schedule, again.owl_lambda, again.owl_m, again.sparsity) == ("owl", 0.05, 5.0, 0.7)
