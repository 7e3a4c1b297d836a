"""Recipes: defaults, validation messages that name the field and range, YAML/JSON round trip."""

import pytest

from core.engine.recipe import Recipe, load_recipe, recipe_from_text
from core.engine.registry import get_technique, techniques
from core.errors import RecipeError

GOOD = """
version: 1
name: test
description: prune a quarter of the weights, globally
model: {source: "bundled:smollm2-135m"}
steps:
  - technique: magnitude_prune
    params: {sparsity: 0.25, scope: global}
  - technique: magnitude_prune
    enabled: false
"""


def test_round_trip_yaml_and_json(tmp_path):
    recipe = recipe_from_text(GOOD)
    assert recipe.steps[0].config.sparsity == 0.25 and recipe.steps[0].config.scope == "global"
    assert recipe.description == "prune a quarter of the weights, globally"
    assert [i for i, _ in recipe.enabled_steps()] == [0]
    for name in ("r.yaml", "r.json"):
        recipe.save(tmp_path / name)
        again = load_recipe(tmp_path / name)
        assert again.to_dict() == recipe.to_dict()


@pytest.mark.parametrize("text, message", [
    ("steps: [{technique: magnitude_prune, params: {sparsity: 1.2}}]",
     r"step 1 \(magnitude_prune\): sparsity = 1.2 is not allowed: choose 0.0 ≤ sparsity < 1.0"),
    ("steps: [{technique: magnitude_prune, params: {sparsity: 1.0}}]", "sparsity < 1.0"),
    ("steps: [{technique: magnitude_prune, params: {scope: everywhere}}]", "one of 'per_layer', 'global'"),
    ("steps: [{technique: magnitude_prune, params: {sparsity: half}}]", "sparsity must be float"),
    ("steps: [{technique: magnitude_prune, params: {sparsty: 0.5}}]", "unknown parameter.*sparsty"),
    ("steps: [{technique: no_such_thing}]", "unknown technique 'no_such_thing'; available: .*magnitude_prune"),
    ("data: {sequence_length: 4}", "data: sequence_length = 4 is not allowed: choose 16 ≤ sequence_length ≤ 8192"),
    ("model: {task: translate}", "one of 'causal-lm', 'sequence-classification'"),
    ("version: 7", "version 7 is not supported"),
    ("colour: blue", "unknown recipe key"),
    ("- just a list", "must be a mapping"),
])
def test_invalid_values_name_field_and_range(text, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_text(text)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(RecipeError, match="not a text file"):
        load_recipe(binary)


def test_validate_catches_values_edited_in_place():
    recipe = recipe_from_text(GOOD)
    recipe.steps[0].config.sparsity = -0.1
    with pytest.raises(RecipeError, match="step 1"):
        recipe.validate()


def test_registry_lists_magnitude_with_family():
    info = get_technique("magnitude_prune")
    assert info.family == "pruning" and "magnitude_prune" in techniques()
    assert info.unavailable_reason(device="cpu") is None


def test_default_recipe_is_valid():
    Recipe().validate()


def test_discovery_is_complete_after_a_direct_import():
    """Importing one technique module first must not hide the others."""
    import subprocess
    import sys

    code = ("import core.techniques.prune.magnitude\n"
            "from core.engine.registry import techniques\n"
            "names = techniques()\n"
            "assert 'wanda_prune' in names and 'gptq_quantize' in names, sorted(names)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
