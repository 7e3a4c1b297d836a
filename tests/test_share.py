"""Layer sharing: pair choice, sharing math, the technique end to end, the 'shared' format's reload."""

import pytest
import torch

from core.engine.params import config_from_dict
from core.engine.recipe import DataSpec, Recipe, load_recipe
from core.engine.runner import RunContext, run_recipe
from core.errors import RecipeError
from core.events import drain
from core.io.saving import save_model
from core.models.loading import load_model
from core.models.model_info import folder_weight_bytes, inspect_model
from core.techniques.share.shared import CorrectedSharedLinear, check_pairs, choose_pairs, share_block
from core.techniques.share.technique import ShareLayersConfig, apply_share_layers
from tests.helpers import collect, write_recipe


def _apply(model, tokenizer, text_file, **params):
    recipe = Recipe(data=DataSpec(calibration=str(text_file), sequence_length=16, calibration_windows=4))
    return drain(apply_share_layers(model, config_from_dict(ShareLayersConfig, params),
                                    RunContext(recipe, tokenizer, "cpu")))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_sharing_a_layer_with_itself_is_rejected_up_front():
    with pytest.raises(RecipeError, match="itself"):
        config_from_dict(ShareLayersConfig, {"pairs": [[1, 1]]})
    with pytest.raises(RecipeError, match="itself"):
        config_from_dict(ShareLayersConfig, {"pairs": ["3-3"]})
    with pytest.raises(RecipeError, match="pairs"):
        config_from_dict(ShareLayersConfig, {"pairs": [[1, 2, 3]]})
    assert config_from_dict(ShareLayersConfig, {"pairs": ["0-1", [2, 3]]}).pairs == ["0-1", [2, 3]]
    with pytest.raises(RecipeError, match="follower"):
        check_pairs([(0, 2), (1, 2)])
    with pytest.raises(RecipeError, match="source"):
        check_pairs([(0, 1), (1, 2)])


def test_choose_pairs_takes_most_alike_without_chains():
    scores = {(0, 1): 0.9, (1, 2): 0.8, (2, 3): 0.7, (0, 3): 0.1}
    assert choose_pairs(scores, 2) == [(0, 1), (2, 3)]
    with pytest.raises(RecipeError, match="share fewer"):
        choose_pairs({(0, 1): 1.0}, 2)


def test_share_block_ties_weights_and_full_rank_correction_is_exact(tiny_llama):
    layers = tiny_llama.model.layers
    own = layers[1].mlp.up_proj.weight.detach().clone()
    share_block(layers[0], layers[1], correction_rank=0)
    assert layers[1].mlp.up_proj.weight is layers[0].mlp.up_proj.weight
    base = torch.nn.Linear(64, 128, bias=False)
    follower = torch.nn.Sequential(torch.nn.Linear(64, 128, bias=False))
    follower[0].weight.data.copy_(own)
    share_block(torch.nn.Sequential(base), follower, correction_rank=64)
    assert isinstance(follower[0], CorrectedSharedLinear)
    x = torch.randn(3, 64)
    assert torch.allclose(follower[0](x), x @ own.T, atol=1e-4)


@pytest.mark.parametrize("params", [{"num_shared": 1}, {"num_shared": 1, "similarity": "weights"},
                                    {"pairs": [[0, 1]], "correction_rank": 4}])
def test_shared_model_is_smaller_and_reloads_with_same_logits(tmp_path, tiny_llama, tiny_tokenizer, text_file,
                                                             params):
    dense_dir = save_model(tiny_llama, tiny_tokenizer, tmp_path / "dense")
    before = inspect_model(tiny_llama, with_layers=False).parameters
    report = _apply(tiny_llama, tiny_tokenizer, text_file, **params)
    block_linears = 64 * 64 * 2 + 32 * 64 * 2 + 128 * 64 * 3
    extra = 4 * (64 + 64) * 2 + 4 * (64 + 32) * 2 + 4 * (64 + 128) * 3 if params.get("correction_rank") else 0
    assert before - report.metrics["unique_params_after"] == block_linears - extra
    ids = torch.arange(1, 30).unsqueeze(0)
    expected = _logits(tiny_llama, ids)
    folder = save_model(tiny_llama, tiny_tokenizer, tmp_path / "shared")
    assert folder_weight_bytes(folder) < folder_weight_bytes(dense_dir) - 3 * (block_linears - extra)
    reloaded = load_model(str(folder)).model
    assert torch.equal(_logits(reloaded, ids), expected)
    assert inspect_model(reloaded, with_layers=False).parameters == report.metrics["unique_params_after"]


def test_share_layers_from_a_recipe(tmp_path, tiny_llama_dir, text_file):
    path = write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file, evaluation={"kl_to_teacher": False},
                        steps=[{"technique": "share_layers", "params": {"num_shared": 1}}])
    _, report = collect(run_recipe(load_recipe(path), tmp_path / "out"))
    assert report["steps"][0]["metrics"]["shared_layers"] == 1
    assert report["after"]["parameters"] < report["before"]["parameters"]
    reloaded = load_model(str(tmp_path / "out")).model  # the saved folder is the measured model
    assert inspect_model(reloaded, with_layers=False).parameters == report["after"]["parameters"]


def test_sharing_every_layer_is_rejected(tiny_llama, tiny_tokenizer, text_file):
    with pytest.raises(RecipeError, match="at least one layer"):
        _apply(tiny_llama, tiny_tokenizer, text_file, num_shared=2)
    with pytest.raises(RecipeError, match="outside"):
        _apply(tiny_llama, tiny_tokenizer, text_file, pairs=[[0, 5]])


def test_correction_fitted_to_outputs_beats_one_fitted_to_weights(tiny_llama, tiny_tokenizer, text_file):
    import copy

    windows = RunContext(Recipe(data=DataSpec(calibration=str(text_file), sequence_length=16,
                                              calibration_windows=4)), tiny_tokenizer, "cpu").calibration_windows()
    expected = _logits(tiny_llama, windows)
    errors = {}
    for fit in ("weights", "outputs"):
        model = copy.deepcopy(tiny_llama)
        _apply(model, tiny_tokenizer, text_file, pairs=[[0, 1]], correction_rank=4, correction_fit=fit)
        errors[fit] = float((_logits(model, windows) - expected).pow(2).mean())
    assert errors["outputs"] < errors["weights"]
