"""Low-rank: the 'factorized' saved format (same logits after reload), dense export, the CLI, report notes."""

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from core.cli.commands import main
from core.engine.params import config_from_dict
from core.engine.recipe import DataSpec, Recipe
from core.engine.runner import RunContext
from core.events import drain
from core.io.saving import save_model
from core.models.formats import model_format
from core.models.loading import load_model
from core.models.model_info import inspect_model
from core.techniques.lowrank.factorized import FactorizedLinear
from core.techniques.lowrank.svd import SVDLowRankConfig, apply_svd_lowrank
from tests.helpers import write_recipe


@pytest.fixture
def tied_llama(tiny_tokenizer):
    """Like tiny_llama but with the output head tied to the embeddings (as SmolLM2 has)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, pad_token_id=tiny_tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def _apply(model, tokenizer, text_file, **params):
    recipe = Recipe(data=DataSpec(calibration=str(text_file), sequence_length=16, calibration_windows=4))
    config = config_from_dict(SVDLowRankConfig, params)
    return drain(apply_svd_lowrank(model, config, RunContext(recipe, tokenizer, "cpu")))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("method", ["plain", "activation_aware", "rom"])
@pytest.mark.parametrize("tied", [False, True])
def test_saved_factorized_model_reloads_with_same_logits(tmp_path, tiny_llama, tied_llama, tiny_tokenizer,
                                                         text_file, method, tied):
    model = tied_llama if tied else tiny_llama
    report = _apply(model, tiny_tokenizer, text_file, method=method, target_reduction=0.3)
    assert report.metrics["layers_factorized"] == 14
    assert model_format(model)["format"] == "factorized"
    ids = torch.arange(1, 30).unsqueeze(0)
    expected = _logits(model, ids)
    folder = save_model(model, tiny_tokenizer, tmp_path / "saved")
    reloaded = load_model(str(folder)).model
    assert sum(isinstance(m, FactorizedLinear) for m in reloaded.modules()) == 14
    assert torch.equal(_logits(reloaded, ids), expected)
    assert inspect_model(reloaded, with_layers=False).parameters == inspect_model(model, with_layers=False).parameters
    if tied:
        assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    # saving the reloaded model again works too (the format mark is restored on load)
    again = load_model(str(save_model(reloaded, tiny_tokenizer, tmp_path / "again"))).model
    assert torch.equal(_logits(again, ids), expected)


def test_layers_at_or_above_break_even_are_kept_dense_and_reported(tiny_llama, tiny_tokenizer, text_file):
    report = _apply(tiny_llama, tiny_tokenizer, text_file, method="plain", rank=40)
    rows = {r["layer"]: r for r in report.layers}
    assert not rows["model.layers.0.self_attn.q_proj"]["factorized"]  # 64×64: break-even rank 32
    assert rows["model.layers.0.mlp.gate_proj"]["factorized"]  # 128×64: break-even rank 42.7
    assert isinstance(tiny_llama.model.layers[0].mlp.gate_proj, FactorizedLinear)
    assert isinstance(tiny_llama.model.layers[0].self_attn.q_proj, torch.nn.Linear)
    assert any("q_proj: not factorized: rank ≥ mn/(m+n)" in note for note in report.notes)


def test_second_step_does_not_factorize_the_factors(tiny_llama, tiny_tokenizer, text_file):
    _apply(tiny_llama, tiny_tokenizer, text_file, method="plain", target_reduction=0.2, targets=["*mlp*"])
    report = _apply(tiny_llama, tiny_tokenizer, text_file, method="plain", target_reduction=0.2)
    assert not any(".down" in r["layer"] or ".up" in r["layer"] for r in report.layers)
    assert len(model_format(tiny_llama)["ranks"]) == 14


def test_merge_to_dense_export_loads_in_plain_transformers(tmp_path, tiny_llama_dir, text_file):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file, evaluation={"kl_to_teacher": False},
                          steps=[{"technique": "svd_lowrank",
                                  "params": {"method": "activation_aware", "merge_to_dense": True}}])
    assert main(["-q", "run", str(recipe), "-o", str(tmp_path / "out")]) == 0
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert plain.num_parameters() == original.num_parameters()  # honestly: no smaller
    report = yaml.safe_load((tmp_path / "out" / "report.json").read_text())
    assert any("NOT smaller" in note for note in report["steps"][0]["notes"])


@pytest.mark.parametrize("method", ["plain", "activation_aware", "rom"])
def test_cli_runs_each_method(tmp_path, tiny_llama_dir, text_file, method):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file, evaluation={"kl_to_teacher": False},
                          steps=[{"technique": "svd_lowrank", "params": {"method": method, "target_reduction": 0.2}}])
    assert main(["-q", "run", str(recipe), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "compression_studio.json").is_file()
    model = load_model(str(tmp_path / "out")).model
    assert any(isinstance(m, FactorizedLinear) for m in model.modules())


def test_cli_rejects_invalid_settings_up_front(tmp_path, tiny_llama_dir, text_file, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file,
                          steps=[{"technique": "svd_lowrank", "params": {"target_reduction": 1.0}}])
    assert main(["-q", "run", str(recipe), "-o", str(tmp_path / "out")]) != 0
    assert "target_reduction" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
