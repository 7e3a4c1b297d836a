"""Shape checks run on the model's skeleton before any weights load (issue 20, item 3).

The bundled SmolLM2-135M's targeted Linears have 576 inputs (attention, MLP up/gate) and 1536 (MLP down):
a group size has to divide both, and a suggestion that divides only one of them (288, 576) fails again.
"""

from __future__ import annotations

import math

import pytest
import torch

import core.engine.runner as runner
from core.engine.preflight import check_shapes_before_loading, keeps_shapes
from core.engine.recipe import load_recipe
from core.engine.runner import check_run, run_recipe
from core.errors import RecipeError
from core.events import drain
from core.models.loading import load_model
from core.models.skeleton import model_skeleton
from tests.helpers import write_recipe

BUNDLED = "bundled:smollm2-135m"


@pytest.fixture(scope="module")
def bundled_widths():
    """Input widths of every Linear quantization targets on the real model (lm_head ignored), loaded for real."""
    model = load_model(BUNDLED).model
    return {m.in_features for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}


def _recipe(tmp_path, text_file, source, steps):
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", tmp_path, text_file, model={"source": source},
                                    steps=steps))


def _no_loading(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the shape check")
        yield  # pragma: no cover

    monkeypatch.setattr(runner, "iter_load_model", refuse)


def test_skeleton_has_the_loaded_models_layers_and_no_weights(bundled_widths):
    skeleton = model_skeleton(BUNDLED)
    loaded = load_model(BUNDLED).model
    assert {n: p.shape for n, p in skeleton.named_parameters()} == {n: p.shape for n, p in loaded.named_parameters()}
    assert all(p.is_meta for p in skeleton.parameters())


def test_skeleton_of_a_model_folder(tiny_llama_dir, tiny_llama):
    skeleton = model_skeleton(str(tiny_llama_dir))
    assert {n: p.shape for n, p in skeleton.named_parameters()} == {
        n: p.shape for n, p in tiny_llama.named_parameters()}


def test_a_hub_model_not_downloaded_has_no_skeleton(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert model_skeleton("nobody-here/not-a-model") is None


def test_group_size_refused_before_loading_with_sizes_that_fit_every_layer(tmp_path, text_file, monkeypatch,
                                                                            bundled_widths):
    recipe = _recipe(tmp_path, text_file, BUNDLED,
                     [{"technique": "gptq_quantize", "params": {"bits": 4, "group_size": 160}}])
    _no_loading(monkeypatch)
    with pytest.raises(RecipeError) as caught:
        drain(run_recipe(recipe, tmp_path / "out"))
    message = str(caught.value)
    assert message.startswith("step 1 (GPTQ quantization):") and "160" in message
    suggested = [int(word) for word in message.split("choose one of", 1)[1].split(",")[:-1] if word.strip().isdigit()]
    assert suggested, message
    assert all(width % size == 0 for size in suggested for width in bundled_widths), (suggested, bundled_widths)
    assert max(suggested) <= math.gcd(*bundled_widths)
    assert not (tmp_path / "out").exists()


def test_every_shape_keeping_step_is_checked(tmp_path, text_file, monkeypatch):
    """The second step's group size is checked too: quantizing after pruning to zeros sees the same shapes."""
    recipe = _recipe(tmp_path, text_file, BUNDLED, [
        {"technique": "magnitude_prune", "params": {"sparsity": 0.3}},
        {"technique": "rtn_quantize", "params": {"bits": 4, "group_size": 160}}])
    _no_loading(monkeypatch)
    with pytest.raises(RecipeError, match=r"^step 2 \(Round-to-nearest quantization\)"):
        check_run(recipe, tmp_path / "out")


def test_too_many_layers_to_drop_refused_before_loading(tmp_path, text_file, monkeypatch):
    recipe = _recipe(tmp_path, text_file, BUNDLED, [{"technique": "layer_drop", "params": {"layers_to_drop": 30}}])
    _no_loading(monkeypatch)
    with pytest.raises(RecipeError, match="has 30; drop at most 29"):
        check_run(recipe, tmp_path / "out")


def test_a_fitting_recipe_passes_and_later_shape_changing_steps_are_left_to_run_time(tmp_path, text_file):
    recipe = _recipe(tmp_path, text_file, BUNDLED, [
        {"technique": "gptq_quantize", "params": {"bits": 4, "group_size": 64}},
        {"technique": "layer_drop", "params": {"layers_to_drop": 2}}])
    assert check_shapes_before_loading(recipe) is True
    assert keeps_shapes("gptq_quantize") and keeps_shapes("wanda_prune")
    assert not keeps_shapes("mlp_prune") and not keeps_shapes("layer_drop") and not keeps_shapes("svd_lowrank")
