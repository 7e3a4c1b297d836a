"""RTN and GPTQ: grid math, packing, error compensation, the packed format, and the handlers end to end.

Reload tolerance: our loader rebuilds the same PackedLinear buffers and runs the same ops, so the
reloaded logits must equal the in-memory ones to 1e-5 (they are bit-identical in practice); plain
transformers + compressed-tensors dequantizes with the same formula, checked to 1e-4.
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
from core.models.model_info import inspect_model
from core.techniques.quantize.gptq import GPTQConfig, gptq_quantize_weight
from core.techniques.quantize.grid import (
    check_group_size,
    code_range,
    dequantize,
    pack_int,
    round_to_grid,
    unpack_int,
    valid_group_sizes,
)
from core.techniques.quantize.packed_linear import PackedLinear, int4_kernel_available
from core.techniques.quantize.rtn import RTNConfig
from tests.helpers import run_step, saved_perplexity

HAS_CT = importlib.util.find_spec("compressed_tensors") is not None


def _calibration(in_features, tokens=1024, seed=0):
    """Random inputs [in, tokens] with uneven feature scales and correlated features, like real activations."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(in_features, tokens, generator=g) * torch.rand(in_features, 1, generator=g) * 3
    return x + torch.randn(1, tokens, generator=g)


def _output_error(weight, approx, x):
    """‖(W − Ŵ) X‖² / tokens, computed directly from the inputs."""
    return float(((weight - approx) @ x).pow(2).sum() / x.shape[1])


# ------------------------------------------------------------------------------------------ grid
@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("columns", [32, 64, 70, 576])
def test_pack_unpack_exact_round_trip(bits, columns):
    low, high = code_range(bits)
    codes = torch.randint(low, high + 1, (5, columns), dtype=torch.int8)
    packed = pack_int(codes, bits)
    assert packed.dtype == torch.int32 and packed.shape == (5, -(-columns * bits // 32))
    assert torch.equal(unpack_int(packed, bits, columns), codes)


@pytest.mark.skipif(not HAS_CT, reason="compressed-tensors not installed")
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_packing_matches_compressed_tensors(bits):
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    low, high = code_range(bits)
    codes = torch.randint(low, high + 1, (6, 96), dtype=torch.int8)
    assert torch.equal(pack_int(codes, bits), pack_to_int32(codes, bits))


@pytest.mark.parametrize("bits,group,symmetric", [(2, 32, True), (4, 32, False), (4, 0, True), (8, 64, False)])
def test_rtn_error_within_half_a_step(bits, group, symmetric):
    weight = torch.randn(16, 128)
    codes, scale, zero = round_to_grid(weight, bits, group, symmetric)
    approx = dequantize(codes, scale, zero)
    steps = scale.repeat_interleave(group or 128, dim=1)
    assert ((weight - approx).abs() <= steps / 2 + 1e-6).all()
    low, high = code_range(bits)
    assert codes.min() >= low and codes.max() <= high


def test_group_sizes_for_width_576():
    assert valid_group_sizes(576) == [32, 64, 96, 192, 288, 576]
    with pytest.raises(RecipeError, match="choose one of 32, 64, 96, 192, 288, 576"):
        check_group_size(576, 128, "q_proj")
    check_group_size(576, 192)
    check_group_size(576, 0)  # per channel


# ------------------------------------------------------------------------------------------ GPTQ
@pytest.mark.parametrize("bits,group,symmetric", [(4, 32, True), (3, 64, False), (4, 0, True)])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_layer_output(bits, group, symmetric, act_order):
    torch.manual_seed(0)
    weight = torch.randn(64, 128)
    x = _calibration(128)
    hessian = 2.0 / x.shape[1] * x @ x.T
    codes, scale, zero = round_to_grid(weight, bits, group, symmetric)
    rtn = _output_error(weight, dequantize(codes, scale, zero), x)
    codes, scale, zero, perm, error = gptq_quantize_weight(weight, hessian, bits, group, symmetric, act_order)
    gptq = _output_error(weight, dequantize(codes, scale, zero), x)
    assert gptq < 0.9 * rtn
    assert error == pytest.approx(gptq, rel=1e-3)  # the reported error is the real one
    assert (perm is not None) == act_order


def test_gptq_dead_inputs_and_block_sizes():
    weight = torch.randn(8, 64)
    x = _calibration(64)
    x[5] = 0  # an input that is always zero
    hessian = 2.0 / x.shape[1] * x @ x.T
    codes, scale, zero, _, _ = gptq_quantize_weight(weight, hessian, 4, 32, False, block_size=16)
    assert (dequantize(codes, scale, zero)[:, 5] == 0).all()
    same = gptq_quantize_weight(weight, hessian, 4, 32, False, block_size=128)[0]
    assert torch.equal(codes, same)  # lazy batching changes speed, not the result


# ------------------------------------------------------------------------------------ PackedLinear
def test_packed_linear_forward_and_size(monkeypatch):
    linear = nn.Linear(128, 32)
    codes, scale, zero = round_to_grid(linear.weight, 4, 128, False)
    packed = PackedLinear.from_linear(linear, codes, scale, zero, 4, 128, False)
    x = torch.randn(3, 128)
    expected = x @ dequantize(codes, scale, zero).T + linear.bias
    monkeypatch.setattr(PackedLinear, "use_cpu_kernel", False)
    assert torch.allclose(packed(x), expected, atol=1e-5)  # the reference path is exact
    assert torch.equal(packed.codes(), codes) and torch.equal(packed.zeros(), zero)
    info = packed.compression_info()
    # 4-bit codes + one fp32 scale and one 4-bit zero per 128 weights (+ bias and shape)
    assert info["bits"] == pytest.approx(4 + 32 / 128 + 4 / 128, abs=0.3)


@pytest.mark.skipif(not int4_kernel_available(), reason="this PyTorch build has no CPU int4 kernel")
@pytest.mark.parametrize("symmetric", [True, False])
def test_packed_linear_int4_cpu_kernel_matches_the_reference_path(symmetric, monkeypatch):
    torch.manual_seed(0)
    linear = nn.Linear(192, 48)
    codes, scale, zero = round_to_grid(linear.weight, 4, 64, symmetric)
    packed = PackedLinear.from_linear(linear, codes, scale, zero, 4, 64, symmetric)
    x = torch.randn(2, 5, 192)
    reference = x @ dequantize(codes, scale, zero).T + linear.bias
    with torch.no_grad():
        fast = packed(x)
    assert packed.int4_weight is not None  # the kernel path ran
    assert fast.shape == reference.shape and fast.dtype == x.dtype
    relative = (fast - reference).norm() / reference.norm()
    assert 0 < relative < 0.01  # bfloat16 activations: close, not identical
    assert "int4_weight" not in packed.state_dict()  # the saved format is unchanged
    packed.load_state_dict(PackedLinear.from_linear(linear, codes.flip(1), scale, zero, 4, 64, symmetric)
                           .state_dict())
    assert packed.int4_weight is None  # new codes drop the kernel's copy of the old ones
    # layers the kernel cannot take keep the exact path: 3 bits, or groups it does not know
    for bits, group in ((3, 64), (4, 96)):
        c, s, z = round_to_grid(linear.weight, bits, group, symmetric)
        other = PackedLinear.from_linear(linear, c, s, z, bits, group, symmetric)
        assert torch.allclose(other(x), x @ dequantize(c, s, z).T + linear.bias, atol=1e-5)
        assert other.int4_weight is None


# ------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("cls", [RTNConfig, GPTQConfig])
def test_configs_reject_bad_bits_and_groups(cls):
    with pytest.raises(RecipeError, match="choose 2–8 bits; 4 is the usual choice"):
        config_from_dict(cls, {"bits": 1})
    with pytest.raises(RecipeError, match="group_size"):
        config_from_dict(cls, {"group_size": 4})


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("technique,symmetric", [("gptq_quantize", True), ("rtn_quantize", False)])
def test_end_to_end_saves_packed_and_reloads(tmp_path, tiny_llama_dir, text_file, technique, symmetric):
    events, report = run_step(tmp_path, tiny_llama_dir, text_file, technique,
                          {"bits": 4, "group_size": 32, "symmetric": symmetric, "quantize_embedding": False})
    stats = [e for e in events if isinstance(e, LayerStat) and e.name == "bits"]
    assert len(stats) == 14 and not any("lm_head" in s.layer for s in stats)
    step = report["steps"][0]
    bits = 4 + 32 / 32 + (0 if symmetric else 4 / 32)  # codes + fp32 scale (+ 4-bit zero) per 32 weights
    assert step["metrics"]["bits_per_weight"] == pytest.approx(bits, abs=0.05)
    # Target layers shrink from 32 to ~5 bits; embeddings and lm_head (2·320·64 fp32) stay as they were
    # (quantize_embedding off; tests/test_quant_embedding.py covers it on).
    dense = report["before"]["bytes_on_disk"]
    targets = 2 * (4 * 64 * 64 // 2 + 64 * 64 // 2 * 2 + 3 * 64 * 128) * 4  # fp32 bytes of the 14 Linears
    expected = dense - targets + targets * bits / 32
    assert report["after"]["bytes_on_disk"] == pytest.approx(expected, rel=0.05)

    manifest = json.loads((tmp_path / "out" / "compression_studio.json").read_text())
    assert manifest["plain_transformers"]  # asymmetric too: its config asks transformers to dequantize at load
    loaded = load_model(str(tmp_path / "out"))
    model = loaded.model
    assert isinstance(model.model.layers[0].self_attn.q_proj, PackedLinear)
    summary = inspect_model(model)
    q_row = next(r for r in summary.layers if r.name.endswith("layers.0.self_attn.q_proj"))
    assert q_row.bits == pytest.approx(bits, abs=0.05)
    assert summary.bytes_in_memory < report["before"]["bytes_in_memory"] - targets * 0.8
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        again = load_model(str(tmp_path / "out")).model(ids).logits
        first = model(ids).logits
    assert torch.allclose(first, again, atol=1e-5)
    assert report["after"]["perplexity"]["perplexity"] == pytest.approx(saved_perplexity(tmp_path / "out", text_file),
                                                                        rel=1e-4)


@pytest.mark.skipif(not HAS_CT, reason="compressed-tensors not installed")
def test_plain_transformers_reads_the_folder(tmp_path, tiny_llama_dir, text_file, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(PackedLinear, "use_cpu_kernel", False)  # the same weights, compared on the exact path
    run_step(tmp_path, tiny_llama_dir, text_file, "gptq_quantize", {"bits": 4, "group_size": 32,
                                                                     "quantize_embedding": False})
    ids = torch.randint(0, 300, (1, 16))
    with torch.no_grad():
        ours = load_model(str(tmp_path / "out")).model(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()(ids).logits
    assert torch.allclose(ours, plain, atol=1e-4)


def test_group_size_not_dividing_width_is_rejected_up_front(tmp_path, tiny_llama_dir, text_file):
    with pytest.raises(RecipeError, match="group size 48 does not divide.*choose one of 32, 64"):
        run_step(tmp_path, tiny_llama_dir, text_file, "gptq_quantize", {"bits": 4, "group_size": 48})
    assert not (tmp_path / "out").exists()


def test_bits_1_rejected_in_a_recipe(tmp_path, tiny_llama_dir, text_file):
    with pytest.raises(RecipeError, match="choose 2–8 bits"):
        run_step(tmp_path, tiny_llama_dir, text_file, "gptq_quantize", {"bits": 1, "group_size": 32})


def test_true_sequential_stages_follow_the_block_and_quantize_everything(tmp_path, tiny_llama_dir, text_file):
    from core.engine.calibration import _stages, capture_block_inputs, find_blocks

    model = load_model(str(tiny_llama_dir)).model
    _, blocks = find_blocks(model)
    inputs, kwargs = capture_block_inputs(model, blocks, torch.randint(0, 300, (1, 8)), "cpu")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("model.layers.0.")}
    groups, called_once = _stages(blocks[0], linears, inputs[0], kwargs[0], "cpu")
    stages = [[name.rsplit(".", 1)[-1] for name in stage] for stage in groups]
    assert stages == [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]
    assert called_once

    events, report = run_step(tmp_path, tiny_llama_dir, text_file, "gptq_quantize",
                          {"bits": 4, "group_size": 32, "true_sequential": True})
    assert len(report["steps"][0]["layers"]) == 14
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    _, plain = run_step(plain_dir, tiny_llama_dir, text_file, "gptq_quantize", {"bits": 4, "group_size": 32})
    errors = {r["layer"]: r["reconstruction_error"] for r in report["steps"][0]["layers"]}
    plain_errors = {r["layer"]: r["reconstruction_error"] for r in plain["steps"][0]["layers"]}
    first = "model.layers.0.self_attn.q_proj"
    assert errors[first] == pytest.approx(plain_errors[first])  # the first stage sees the same inputs
    assert errors["model.layers.0.self_attn.o_proj"] != pytest.approx(plain_errors["model.layers.0.self_attn.o_proj"])
