"""Mixed precision by sensitivity, MSE-clipped grids, and the storage count they rely on.

Reload tolerance as in test_quant_rtn_gptq: our loader is bit-identical in practice (checked to
1e-5); plain transformers + compressed-tensors dequantizes with the same formula (1e-4).
"""

import importlib.util
import json

import pytest
import torch
from torch import nn

from core.engine.params import config_from_dict
from core.errors import RecipeError
from core.events import LayerStat
from core.models.loading import load_model
from core.techniques.quantize.allocate import BitOption, allocate_bits, average_bits
from core.techniques.quantize.gptq import gptq_quantize_weight
from core.techniques.quantize.grid import dequantize, group_params, mse_group_params, quantize, round_to_grid
from core.techniques.quantize.mixed import MixedPrecisionConfig
from core.techniques.quantize.packed_linear import PackedLinear, packed_storage_bytes
from core.techniques.quantize.sensitivity import fisher_sensitivities, loss_sensitivities
from tests.helpers import collect, run_step

HAS_CT = importlib.util.find_spec("compressed_tensors") is not None


# ---------------------------------------------------------------------------------- MSE clipping
def _heavy_tailed(rows=32, columns=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=g)
    weight[torch.rand(rows, columns, generator=g) < 0.01] *= 6  # a few outliers per row, as in LLM weights
    return weight


@pytest.mark.parametrize("bits,group,symmetric", [(3, 32, True), (4, 64, False), (4, 0, True), (2, 32, False)])
def test_mse_clip_never_worse_than_minmax_and_better_on_outliers(bits, group, symmetric):
    weight = _heavy_tailed()
    plain = dequantize(*round_to_grid(weight, bits, group, symmetric))
    clipped = dequantize(*round_to_grid(weight, bits, group, symmetric, clip="mse"))
    size = group or weight.shape[1]
    # per group, the searched criterion Σ(w − ŵ)² is never above min-max's (p = 1 is a candidate)
    per_group = [((weight - approx).pow(2)).reshape(32, -1, size).sum(-1) for approx in (plain, clipped)]
    assert (per_group[1] <= per_group[0] * (1 + 1e-5)).all()
    assert (weight - clipped).pow(2).mean() < 0.95 * (weight - plain).pow(2).mean()
    # the other norm of the references (2.4) is honoured too
    scale, zero = mse_group_params(weight, bits, group, symmetric, norm=2.4)
    approx = dequantize(quantize(weight, scale, zero, bits), scale, zero)
    assert (weight - approx).abs().pow(2.4).sum() <= (weight - plain).abs().pow(2.4).sum()


def test_mse_clip_importance_weights_the_search():
    weight = _heavy_tailed(8, 64)
    importance = torch.ones(64)
    importance[:8] = 1000.0  # errors in the first inputs cost far more
    plain, _ = mse_group_params(weight, 3, 32, True)
    weighted, _ = mse_group_params(weight, 3, 32, True, importance=importance)
    def cost(scale):
        return float(((weight - dequantize(quantize(weight, scale, None, 3), scale, None)).pow(2) * importance).sum())
    assert cost(weighted) <= cost(plain)
    assert torch.all(weighted <= group_params(weight, 3, 32, True)[0] + 1e-7)  # ranges only shrink


def test_gptq_with_mse_clip_keeps_its_error_accounting():
    weight = _heavy_tailed(32, 128)
    x = torch.randn(128, 512) * torch.rand(128, 1) * 3
    hessian = 2.0 / x.shape[1] * x @ x.T
    for clip in ("none", "mse"):
        codes, scale, zero, _, error = gptq_quantize_weight(weight, hessian, 3, 32, True, clip=clip)
        direct = float(((weight - dequantize(codes, scale, zero)) @ x).pow(2).sum() / x.shape[1])
        assert error == pytest.approx(direct, rel=1e-3)


# ------------------------------------------------------------------------------------- storage
@pytest.mark.parametrize("bits,group,symmetric,bias", [(4, 32, True, False), (3, 64, False, True), (8, 0, True, True)])
def test_packed_storage_formula_matches_real_buffers(bits, group, symmetric, bias):
    linear = nn.Linear(192, 40, bias=bias)
    packed = PackedLinear.from_linear(linear, *round_to_grid(linear.weight, bits, group, symmetric), bits, group,
                                      symmetric)
    info = packed.compression_info()
    assert packed_storage_bytes(192, 40, bits, group, symmetric, 4, bias) * 8 == pytest.approx(
        info["bits"] * info["params"])


# ---------------------------------------------------------------------------------- allocation
def _options(sensitivities, params=1000, low=4.5, high=8.5):
    options = {name: [BitOption(4, low * params, s), BitOption(8, high * params, s / 100)]
               for name, s in sensitivities.items()}
    return options, {name: params for name in sensitivities}


def test_allocation_meets_target_and_keeps_sensitive_layers_high():
    sens = {f"layer{i}": float(s) for i, s in enumerate([5, 0.1, 3, 0.2, 9, 0.3, 0.05, 1])}
    options, params = _options(sens)
    plan = allocate_bits(options, params, 5.5)  # budget: 8 × 5.5 = 44 → 2 layers can go to 8.5
    assert average_bits(options, params, plan) <= 5.5
    assert sorted(n for n, b in plan.items() if b == 8) == ["layer0", "layer4"]
    assert allocate_bits(options, params, 9.0) == dict.fromkeys(sens, 8)  # everything fits
    assert set(allocate_bits(options, params, 4.5).values()) == {4}


def test_allocation_uses_budget_left_by_a_large_layer_and_per_bit_ratio():
    options = {"big": [BitOption(2, 2000, 10.0), BitOption(4, 4000, 0.0)],
               "small": [BitOption(2, 200, 0.5), BitOption(4, 400, 0.0)],
               "mid": [BitOption(2, 1000, 4.0), BitOption(3, 1500, 1.0), BitOption(4, 2000, 0.0)]}
    params = {"big": 1000, "small": 100, "mid": 500}
    plan = allocate_bits(options, params, 4100 / 1600)  # budget 4100 bits; cheapest 3200 → 900 left
    # per extra bit: big 10/2000, small 0.5/200, mid→3: 3/500, mid→4: 4/1000. mid→3 (500) then small (200).
    assert plan == {"big": 2, "small": 4, "mid": 3}
    assert average_bits(options, params, plan) <= 4100 / 1600


def test_allocation_rejects_unreachable_target_naming_the_range():
    options, params = _options({"a": 1.0, "b": 2.0})
    with pytest.raises(RecipeError, match=r"choose a target between 4.50 and 8.50"):
        allocate_bits(options, params, 4.2)


def test_mixed_config_rejects_bad_widths():
    with pytest.raises(RecipeError, match="high_bits .* must be more than bits"):
        config_from_dict(MixedPrecisionConfig, {"bits": 4, "high_bits": 4})
    with pytest.raises(RecipeError, match="choose a target above 4"):
        config_from_dict(MixedPrecisionConfig, {"bits": 4, "target_bits": 4.0})
    assert config_from_dict(MixedPrecisionConfig, {"intermediate": True, "high_bits": 6}).levels() == [4, 5, 6]


# --------------------------------------------------------------------------------- sensitivities
def test_sensitivities_fall_with_more_bits_and_leave_the_model_unchanged(tiny_llama):
    windows = torch.randint(3, 300, (3, 16))
    linears = {n: m for n, m in tiny_llama.named_modules() if isinstance(m, nn.Linear) and "lm_head" not in n}
    before = {n: m.weight.detach().clone() for n, m in linears.items()}
    fisher = collect(fisher_sensitivities(tiny_llama, linears, windows, [2, 4, 8], 32, True, "none"))[1]
    loss = collect(loss_sensitivities(tiny_llama, linears, windows, [2, 8], 32, True, "none"))[1]
    for name in linears:
        assert fisher[name][2] > fisher[name][4] > fisher[name][8] >= 0
        assert abs(loss[name][2]) > abs(loss[name][8])  # a random model's loss may also fall by chance
        assert torch.equal(linears[name].weight, before[name])
        assert linears[name].weight.grad is None
    assert all(p.requires_grad for p in tiny_llama.parameters())
    # the two measures broadly agree on which layers matter
    names = list(linears)
    f = torch.tensor([fisher[n][2] for n in names])
    ell = torch.tensor([abs(loss[n][2]) for n in names])
    rank = lambda t: t.argsort().argsort().float()  # noqa: E731
    assert torch.corrcoef(torch.stack([rank(f), rank(ell)]))[0, 1] > 0.5


# ----------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method", ["gptq", "rtn"])
def test_mixed_end_to_end_meets_target_emits_sensitivities_and_reloads(tmp_path, tiny_llama_dir, text_file, method,
                                                                      monkeypatch):
    # 4-bit g32 with fp32 scales stores 5 bits per weight, 8-bit 9: a target of 6 lets about a quarter go high
    events, report = run_step(tmp_path, tiny_llama_dir, text_file, "mixed_precision_quantize",
                          {"bits": 4, "high_bits": 8, "group_size": 32, "target_bits": 6.0, "method": method,
                           "clip": "mse", "sensitivity_windows": 2, "quantize_embedding": False})
    sens = [e for e in events if isinstance(e, LayerStat) and e.name == "sensitivity"]
    assert len(sens) == 14 and all(e.value > 0 for e in sens)
    assert len([e for e in events if isinstance(e, LayerStat) and e.name == "sensitivity_8bit"]) == 14
    step = report["steps"][0]
    assert 5.5 < step["metrics"]["bits_per_weight"] <= 6.0
    rows = step["layers"]
    high = [r for r in rows if r["quant_bits"] == 8]
    low = [r for r in rows if r["quant_bits"] == 4]
    assert high and low
    # the layer that loses the most per stored bit at 4 bits is kept at 8
    ratio = lambda r: (r["sensitivity"][4] - r["sensitivity"][8]) / r["params"]  # noqa: E731
    assert max(rows, key=ratio)["quant_bits"] == 8

    config = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    widths = sorted(g["weights"]["num_bits"] for g in config["config_groups"].values())
    assert widths == [4, 8]
    model = load_model(str(tmp_path / "out")).model
    by_name = {n: m.bits for n, m in model.named_modules() if isinstance(m, PackedLinear)}
    assert by_name == {r["layer"]: r["quant_bits"] for r in rows}
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        again = load_model(str(tmp_path / "out")).model(ids).logits
        assert torch.allclose(model(ids).logits, again, atol=1e-5)
    if HAS_CT and method == "gptq":
        from transformers import AutoModelForCausalLM

        monkeypatch.setattr(PackedLinear, "use_cpu_kernel", False)  # the same weights, on the exact path
        with torch.no_grad():
            plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()(ids).logits
            assert torch.allclose(model(ids).logits, plain, atol=1e-4)


def test_mixed_unreachable_target_fails_before_any_work(tmp_path, tiny_llama_dir, text_file):
    with pytest.raises(RecipeError, match="choose a target between 5.02 and 9.02"):
        run_step(tmp_path, tiny_llama_dir, text_file, "mixed_precision_quantize", {"bits": 4, "group_size": 32, "target_bits": 4.5})
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_mixed_4_8_beats_uniform_4_bit_on_the_real_model():
    """SmolLM2-135M, RTN g64: mixed 4/8 bits at ≤ 5 stored bits per weight vs uniform 4-bit (4.5 stored)."""
    from core.data.texts import load_texts, token_windows
    from core.engine.recipe import DataSpec, Recipe
    from core.engine.registry import get_technique
    from core.engine.runner import RunContext
    from core.eval.perplexity import perplexity
    from core.events import drain

    def quantized_perplexity(technique, params):
        loaded = load_model("bundled:smollm2-135m")
        recipe = Recipe(data=DataSpec(sequence_length=256, calibration_windows=8))
        info = get_technique(technique)
        report = drain(info.handler(loaded.model, config_from_dict(info.config_cls, params),
                                    RunContext(recipe, loaded.tokenizer, "cpu")))
        windows = token_windows(load_texts("bundled:wiki-evaluation"), loaded.tokenizer, 256, 8)
        return perplexity(loaded.model, windows).perplexity, report.metrics["bits_per_weight"]

    uniform, uniform_bits = quantized_perplexity("rtn_quantize", {"bits": 4, "group_size": 64})
    mixed, mixed_bits = quantized_perplexity("mixed_precision_quantize", {
        "bits": 4, "high_bits": 8, "group_size": 64, "target_bits": 5.0, "method": "rtn",
        "sensitivity_windows": 4})
    assert uniform_bits < mixed_bits <= 5.0
    assert mixed < uniform
