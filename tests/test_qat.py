"""Quantization-aware training: the fake quantizer is the packing grid, gradients pass straight through,
the registered step (through the runner) beats plain rounding on the bundled model, and its result reloads
with the trained logits and exports to GGUF Q4_0 with the trained values."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from core.engine.recipe import Recipe
from core.engine.runner import run_recipe
from core.errors import RecipeError, StudioError
from core.events import Metric, drain
from core.models.loading import load_model
from core.techniques.quantize import qat as qat_module
from core.techniques.quantize.fake_quant import (
    gguf_codes,
    gguf_fake_quantize,
    int_codes,
    int_fake_quantize,
    int_fake_quantize_learned_scale,
)
from core.techniques.quantize.grid import dequantize, round_to_grid
from core.techniques.quantize.packed_linear import PackedLinear
from core.techniques.quantize.qat_linear import QATLinear
from tests.conftest import SAMPLE_TEXT
from tests.helpers import collect

GGUF_TYPES = {"q4_0": gguf.GGMLQuantizationType.Q4_0, "q8_0": gguf.GGMLQuantizationType.Q8_0}


def _weight(rows=24, columns=128, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=generator) * 0.05
    weight[0, :32] = 0.0  # an all-zero group / block
    weight[1, 5] = 0.9  # an outlier
    return weight


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [32, 0])
def test_fake_quant_forward_is_exactly_the_rtn_dequantized_weight(bits, symmetric, group):
    weight = _weight()
    codes, scale, zero = round_to_grid(weight, bits, group, symmetric, dtype=torch.float32)
    assert torch.equal(int_fake_quantize(weight, scale, zero, bits), dequantize(codes, scale, zero))
    linear = torch.nn.Linear(128, 24)
    with torch.no_grad():
        linear.weight.copy_(weight)
    layer = QATLinear.from_linear(linear, bits, group, symmetric)
    assert torch.equal(layer.quantized_weight(), dequantize(codes, scale, zero))
    assert torch.equal(layer.to_packed().codes(), codes)


def test_fake_quant_of_a_gptq_layer_starts_exactly_at_its_weights():
    weight = _weight()
    codes, scale, zero = round_to_grid(weight, 3, 32, False, dtype=torch.float32, clip="mse")
    codes = (codes.int() + torch.randint(-1, 2, codes.shape)).clamp(-4, 3).to(torch.int8)  # GPTQ's are not RTN's
    linear = torch.nn.Linear(128, 24)
    packed = PackedLinear.from_linear(linear, codes, scale, zero, 3, 32, False)
    layer = QATLinear.from_packed(packed)
    x = torch.randn(3, 128)
    assert torch.equal(layer(x), packed(x)) and torch.equal(layer.to_packed().codes(), codes)


@pytest.mark.parametrize("grid", ["q4_0", "q8_0"])
def test_gguf_grids_are_llama_cpps_blocks_and_survive_requantizing(grid):
    weight = _weight()
    weight[2, 40] = -0.7  # the largest magnitude is negative in this block
    expected = gguf.quants.dequantize(gguf.quants.quantize(weight.numpy(), GGUF_TYPES[grid]), GGUF_TYPES[grid])
    codes, scale, _ = gguf_codes(weight, grid)
    ours = dequantize(codes, scale, None).numpy()
    assert np.array_equal(ours, expected)
    assert torch.equal(gguf_fake_quantize(weight, grid), torch.from_numpy(expected))
    again = gguf.quants.dequantize(gguf.quants.quantize(ours, GGUF_TYPES[grid]), GGUF_TYPES[grid])
    assert np.array_equal(again, ours)  # no second rounding when exported


def test_gradient_passes_straight_through_except_where_clamped():
    weight = _weight()
    codes, scale, zero = round_to_grid(weight, 3, 32, True, dtype=torch.float32)
    moved = weight.clone()
    moved[1, 5] = 2.0  # far outside its fixed group's range: clamped
    latent = moved.clone().requires_grad_(True)
    upstream = torch.randn_like(weight)
    (int_fake_quantize(latent, scale, zero, 3) * upstream).sum().backward()
    expected = upstream.clone()
    expected[1, 5] = 0.0
    assert torch.equal(latent.grad, expected)
    latent = weight.clone().requires_grad_(True)
    (gguf_fake_quantize(latent, "q4_0") * upstream).sum().backward()
    assert torch.equal(latent.grad, upstream)  # Q4_0's scale is derived from the block: nothing clamps


@pytest.mark.parametrize("symmetric", [True, False])
def test_a_learned_scale_quantizes_exactly_and_gets_the_codes_gradient(symmetric):
    """Forward: the very grid values of the fixed-scale quantizer.  Backward: ∂ŵ/∂w = 1 inside the range (0 where
    clamped) and ∂ŵ/∂s = q − z (the codes held), summed per group."""
    weight = _weight()
    weight[3, 7] = 2.0  # clamped
    _, scale, zero = round_to_grid(_weight(), 3, 32, symmetric, dtype=torch.float32)
    latent = weight.clone().requires_grad_(True)
    learned = scale.clone().requires_grad_(True)
    values = int_fake_quantize_learned_scale(latent, learned, zero, 3)
    assert torch.equal(values, int_fake_quantize(weight, scale, zero, 3))
    upstream = torch.randn_like(weight)
    (values * upstream).sum().backward()
    codes, inside = int_codes(weight, scale, zero, 3)
    assert not inside[3, 7]
    torch.testing.assert_close(latent.grad, upstream * inside, rtol=1e-6, atol=1e-7)  # s · (1/s) in float32
    shift = 0.0 if zero is None else zero.float().repeat_interleave(32, dim=1)
    per_weight = codes.float() - shift
    expected = (upstream * per_weight).reshape(24, 4, 32).sum(-1)
    torch.testing.assert_close(learned.grad, expected, rtol=1e-5, atol=1e-5)


def test_learning_the_scales_alone_fits_the_float_layer_better():
    """With the weights frozen at RTN's codes, training only the scales (as QATLinear does) lowers the output error
    against the float layer: the gradient points the right way, and to_packed keeps the trained scales."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 24, bias=False)
    with torch.no_grad():
        linear.weight.copy_(_weight())
    layer = QATLinear.from_linear(linear, 3, 32, False, learn_scale=True)
    layer.weight.requires_grad_(False)
    x = torch.randn(256, 128)
    target = linear(x).detach()
    before = torch.mean((layer(x) - target) ** 2).item()
    from core.techniques.quantize.qat_linear import SCALE_RATE

    optimizer = torch.optim.Adam([layer.scale_log_gain], lr=1e-2 / SCALE_RATE)  # each scale moves ≤ 1% per step
    for _ in range(100):
        optimizer.zero_grad()
        torch.mean((layer(x) - target) ** 2).backward()
        optimizer.step()
    with torch.no_grad():
        after = torch.mean((layer(x) - target) ** 2).item()
        packed = layer.to_packed()
        assert torch.equal(packed(x), layer(x))
    assert not torch.equal(packed.weight_scale, layer.weight_scale)  # the scales it saves are the trained ones
    assert after < 0.95 * before, (before, after)  # measured 0.0110 -> 0.0099 (re-fitting by MSE clipping: 0.0099)


def _tiny_recipe(tiny_llama_dir, text, steps, **evaluation) -> Recipe:
    return Recipe.from_dict({
        "name": "qat tiny", "model": {"source": str(tiny_llama_dir)},
        "data": {"calibration": str(text), "evaluation": str(text), "sequence_length": 16, "calibration_windows": 8},
        "evaluation": {"max_windows": 4, "kl_to_teacher": False, **evaluation}, "steps": steps})


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text((SAMPLE_TEXT + "\n\n") * 3, encoding="utf-8")
    return path


QAT_TINY = {"max_steps": 6, "eval_every": 3, "batch_size": 4, "learning_rate": 0.01, "train_windows": 24,
            "validation_windows": 4}


def _spy_on_conversion(monkeypatch, probe):
    """Record the model's logits on ``probe`` just before the step converts it to packed layers."""
    seen = {}
    real = qat_module.finish_qat

    def finish(model, layers):
        with torch.no_grad():
            seen["logits"] = model(probe).logits.clone()
            seen["weights"] = {name: layer.quantized_weight() for name, layer in layers}
        return real(model, layers)

    monkeypatch.setattr(qat_module, "finish_qat", finish)
    return seen


@pytest.mark.parametrize("first", [None, "rtn_quantize", "gptq_quantize"])
def test_saved_result_reloads_with_exactly_the_logits_training_ended_with(monkeypatch, tmp_path, tiny_llama_dir,
                                                                         text, first):
    monkeypatch.setattr(PackedLinear, "use_cpu_kernel", False)  # the exact reference path (int4 kernel: bf16)
    probe = torch.randint(0, 300, (2, 16))
    seen = _spy_on_conversion(monkeypatch, probe)
    grid = {"bits": 3, "group_size": 32, "symmetric": False}
    steps = ([{"technique": first, "params": grid}] if first else []) + [{"technique": "qat", "params": {**grid, **QAT_TINY}}]
    events, report = collect(run_recipe(_tiny_recipe(tiny_llama_dir, text, steps), tmp_path / "out"))
    losses = [e.value for e in events if isinstance(e, Metric) and e.name == "loss/total"]
    assert len(losses) == 6 and report["steps"][-1]["metrics"]["tokens_trained"] == 6 * 4 * 16
    loaded = load_model(str(tmp_path / "out"))
    packed = {n: m for n, m in loaded.model.named_modules() if type(m) is PackedLinear}
    assert set(packed) == set(seen["weights"]) and len(packed) == 14
    for name, weight in seen["weights"].items():
        assert torch.equal(packed[name].dequantized_weight(), weight), name
    with torch.no_grad():
        assert torch.equal(loaded.model(probe).logits, seen["logits"])


def test_training_moves_the_codes_and_lowers_the_loss(monkeypatch, tmp_path, tiny_llama_dir, text):
    """On the tiny model at 2 bits with fixed scales: the rounded weights change (the STE lets gradients reach them)
    and the distillation loss falls over the steps.  (Its learning rate, 0.01, would move learned scales by
    e^(0.01 · SCALE_RATE) per step.)"""
    seen = _spy_on_conversion(monkeypatch, torch.randint(0, 300, (1, 8)))
    steps = [{"technique": "rtn_quantize", "params": {"bits": 2, "group_size": 32}},
             {"technique": "qat", "params": {"bits": 2, "group_size": 32, **QAT_TINY, "max_steps": 12,
                                             "eval_every": 12, "schedule": "constant", "learn_scales": False}}]
    events, report = collect(run_recipe(_tiny_recipe(tiny_llama_dir, text, steps), tmp_path / "out"))
    losses = [e.value for e in events if isinstance(e, Metric) and e.name == "loss/total"]
    assert np.mean(losses[-3:]) < 0.98 * np.mean(losses[:3]), losses  # measured: 2.90 -> 2.81
    metrics = report["steps"][1]["metrics"]
    assert metrics["val_perplexity_best"] < metrics["val_perplexity_start"]
    rtn = load_model(str(tiny_llama_dir))
    from core.techniques.quantize.grid import round_to_grid as rtn_round

    name = "model.layers.0.mlp.up_proj"
    codes, scale, zero = rtn_round(rtn.model.get_submodule(name).weight, 2, 32, True, dtype=torch.float32)
    assert not torch.equal(seen["weights"][name], dequantize(codes, scale, zero))


def test_q4_0_grid_exports_to_gguf_with_exactly_the_trained_values(monkeypatch, tmp_path, tiny_llama_dir, text):
    from core.io.export import iter_export_gguf
    from core.io.gguf_export import permute_rotary

    seen = _spy_on_conversion(monkeypatch, torch.randint(0, 300, (1, 8)))
    params = {"bits": 4, "group_size": 32, "symmetric": True, "grid": "q4_0", **QAT_TINY}
    drain(run_recipe(_tiny_recipe(tiny_llama_dir, text, [{"technique": "qat", "params": params}]), tmp_path / "out"))
    _, written = collect(iter_export_gguf(tmp_path / "out", tmp_path / "qat.gguf", "Q4_0"))  # the Export page's job
    assert written["types"]["blk.0.ffn_up.weight"] == "Q4_0"
    loaded = load_model(str(tmp_path / "out"))
    reader = gguf.GGUFReader(str(tmp_path / "qat.gguf"))
    tensors = {t.name: t for t in reader.tensors}
    config = loaded.model.config
    for layer in range(config.num_hidden_layers):
        for hf, name, heads in (("self_attn.q_proj", "attn_q", config.num_attention_heads),
                                ("self_attn.k_proj", "attn_k", config.num_key_value_heads),
                                ("mlp.down_proj", "ffn_down", None)):
            trained = seen["weights"][f"model.layers.{layer}.{hf}"].numpy()
            if heads:
                trained = permute_rotary(trained, heads)
            tensor = tensors[f"blk.{layer}.{name}.weight"]
            stored = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(trained.shape)
            assert np.array_equal(stored, trained), (layer, name)
    # a packed result on another grid would be rounded a second time: refused
    steps = [{"technique": "qat", "params": {**params, "grid": "int", "quantize_embedding": False}}]  # same bits and blocks, min-max scales
    drain(run_recipe(_tiny_recipe(tiny_llama_dir, text, steps), tmp_path / "rtn"))
    with pytest.raises(StudioError, match="second rounding"):
        collect(iter_export_gguf(tmp_path / "rtn", tmp_path / "rtn.gguf", "Q4_0"))
    assert not (tmp_path / "rtn.gguf").exists()


def test_bad_settings_are_refused_with_what_to_choose(tmp_path, tiny_llama_dir, text):
    from core.techniques.quantize.qat import QATConfig

    with pytest.raises(RecipeError, match="set bits 4, group_size 32 and symmetric true"):
        QATConfig(grid="q4_0", bits=4, group_size=64).validate()
    steps = [{"technique": "rtn_quantize", "params": {"bits": 4, "group_size": 32}},
             {"technique": "qat", "params": {"bits": 4, "group_size": 32, "grid": "q4_0", **QAT_TINY}}]
    with pytest.raises(RecipeError, match="put QAT with this grid first"):
        drain(run_recipe(_tiny_recipe(tiny_llama_dir, text, steps), tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_the_trained_3_bit_preset_is_estimated_as_the_training_run_it_is():
    """The preset's estimate is mostly the training step and doubles with the steps (an honest 'slow')."""
    from pathlib import Path

    from core.engine.recipe import load_recipe
    from tests.test_estimate import _estimate

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "resources" / "presets" / "qat-3bit-trained.yaml")
    estimate = _estimate(recipe)
    phases = dict(estimate.phase_seconds)
    assert phases["step 2: qat"] > 0.8 * estimate.seconds
    recipe.steps[1].config.max_steps *= 2
    assert dict(_estimate(recipe).phase_seconds)["step 2: qat"] == pytest.approx(2 * phases["step 2: qat"], rel=0.01)


def test_a_cancelled_qat_run_resumes_bit_for_bit(monkeypatch, tmp_path, tiny_llama_dir, text):
    """Cancel after step 3, run again with resume: the trained grid equals an uninterrupted run's exactly."""
    from core.engine.runner import checkpoint_root

    seen = _spy_on_conversion(monkeypatch, torch.randint(0, 300, (1, 8)))
    steps = [{"technique": "qat", "params": {"bits": 3, "group_size": 32, **QAT_TINY}}]
    whole = _tiny_recipe(tiny_llama_dir, text, steps)
    drain(run_recipe(whole, tmp_path / "whole"))
    expected = seen.pop("weights")
    recipe = _tiny_recipe(tiny_llama_dir, text, steps)
    job = run_recipe(recipe, tmp_path / "out")
    for event in job:
        if isinstance(event, Metric) and event.name == "loss/total" and event.step == 4:
            break
    job.close()
    assert not (tmp_path / "out").exists() and checkpoint_root(recipe, tmp_path / "out").exists()
    events, report = collect(run_recipe(recipe, tmp_path / "out", resume=True))
    assert [e.step for e in events if isinstance(e, Metric) and e.name == "loss/total"] == [4, 5, 6]
    assert report["steps"][0]["metrics"]["resumed_from_step"] == 3
    assert all(torch.equal(seen["weights"][name], weight) for name, weight in expected.items())




@pytest.mark.slow
def test_qat_on_the_bundled_model_recovers_much_of_what_3_bit_rounding_lost(tmp_path):
    """The registered RTN step then the registered QAT step, through the runner on SmolLM2-135M (every Linear,
    3 bits, symmetric groups of 64): 6 training steps of 4 × 128 tokens bring the model much closer to the original
    on windows held out from the training text.  The step's step-0 measurement is the RTN result exactly (see the
    tests above), so start vs best is RTN vs QAT.  Fixed scales do not move in so few steps (the latent weights sit
    on their grid points): this is mostly the learned scales' doing.  Measured: perplexity 157.6 → 76.1, KL to the
    original 2.05 → 1.35; without learning the scales nothing moves."""
    grid = {"bits": 3, "group_size": 64, "symmetric": True}
    recipe = Recipe.from_dict({
        "name": "qat", "model": {"source": "bundled:smollm2-135m"},
        "data": {"calibration": "bundled:wiki-calibration", "evaluation": "bundled:wiki-evaluation",
                 "sequence_length": 128, "calibration_windows": 8},
        "evaluation": {"max_windows": 2, "kl_to_teacher": False},
        "steps": [{"technique": "rtn_quantize", "params": grid},
                  {"technique": "qat", "params": {**grid, "max_steps": 6, "eval_every": 6, "batch_size": 4,
                                                  "learning_rate": 3e-5, "train_windows": 64,
                                                  "validation_windows": 2}}]})
    metrics = drain(run_recipe(recipe, tmp_path / "qat"))["steps"][1]["metrics"]
    assert metrics["best_step"] == 6, metrics
    assert metrics["kl_to_teacher_best"] < 0.8 * metrics["kl_to_teacher_start"], metrics
    assert metrics["val_perplexity_best"] < 0.7 * metrics["val_perplexity_start"], metrics
