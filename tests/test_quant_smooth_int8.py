"""SmoothQuant folding and the per-token int8 Linear (dynamic int8's two parts), on small layers and the tiny Llama."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.engine.targets import DEFAULT_IGNORE, DEFAULT_TARGETS
from core.events import drain
from core.techniques.quantize.int8_linear import Int8DynamicLinear, quantize_rows
from core.techniques.quantize.smooth import (
    norm_scales_output,
    share_over_kv_groups,
    smooth_model,
    smoothing_scales,
)


def test_smoothing_scales_follow_the_formula():
    act = torch.tensor([8.0, 1.0, 0.0])
    weight = torch.tensor([0.5, 2.0, 1.0])
    scales = smoothing_scales(act, weight, alpha=0.5)
    assert torch.allclose(scales[:2], torch.tensor([8.0 ** 0.5 / 0.5 ** 0.5, 1.0 / 2.0 ** 0.5]))
    assert scales[2] > 0  # a dead channel gets a tiny positive scale, never zero or inf
    assert torch.allclose(smoothing_scales(act, weight, alpha=1.0)[:2], act[:2])


def test_kv_group_sharing_takes_the_max_of_each_group():
    # 2 kv heads, 2 query heads each, head_dim 2: query heads 0,1 read kv head 0; 2,3 read kv head 1
    values = torch.tensor([1.0, 5.0, 3.0, 2.0, 7.0, 0.0, 4.0, 9.0])
    assert share_over_kv_groups(values, num_kv_heads=2, query_groups=2).tolist() == \
        [3.0, 5.0, 3.0, 5.0, 7.0, 9.0, 7.0, 9.0]


def test_norm_check_tells_plain_scale_norms_from_offset_ones():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    class OffsetNorm(LlamaRMSNorm):  # Gemma's form: (1 + weight) * x̂
        def forward(self, x):
            variance = x.pow(2).mean(-1, keepdim=True)
            return x * torch.rsqrt(variance + self.variance_epsilon) * (1.0 + self.weight)

    plain = LlamaRMSNorm(16)
    weight_before = plain.weight.detach().clone()
    assert norm_scales_output(plain, 16)
    assert torch.equal(plain.weight, weight_before)  # the check puts the weight back
    assert not norm_scales_output(OffsetNorm(16), 16)
    assert not norm_scales_output(plain, 8)  # wrong width


def test_smoothing_keeps_the_float_model_and_flattens_activations(tiny_llama, tiny_tokenizer):
    windows = torch.randint(0, len(tiny_tokenizer), (4, 32), generator=torch.Generator().manual_seed(1))
    # give the normalised hidden states an outlier channel, as SmolLM2 has
    with torch.no_grad():
        for layer in tiny_llama.model.layers:
            layer.input_layernorm.weight[3] = 30.0
            layer.self_attn.v_proj.weight[5] *= 20.0  # and one loud value channel in front of o_proj
    with torch.no_grad():
        reference = tiny_llama(windows).logits
    layer = tiny_llama.model.layers[0]
    norm_before = layer.input_layernorm.weight.detach().clone()
    v_before = layer.self_attn.v_proj.weight.detach().clone()

    def spread(module):  # largest over median per-channel max |input|
        seen = []
        handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].abs().amax(dim=(0, 1))))
        with torch.no_grad():
            tiny_llama(windows)
        handle.remove()
        channel_max = torch.stack(seen).amax(dim=0)
        return float(channel_max.max() / channel_max.median())

    spread_before = spread(layer.self_attn.q_proj), spread(layer.self_attn.o_proj)
    skipped = drain(smooth_model(tiny_llama, windows, 0.75, targets=DEFAULT_TARGETS, ignore=DEFAULT_IGNORE))
    assert skipped == []
    with torch.no_grad():
        assert (tiny_llama(windows).logits - reference).abs().max() < 1e-4  # exact in float, up to rounding
    assert not torch.equal(layer.input_layernorm.weight, norm_before)
    assert not torch.equal(layer.self_attn.v_proj.weight, v_before)  # v_proj rows carry o_proj's scales (GQA)
    spread_after = spread(layer.self_attn.q_proj), spread(layer.self_attn.o_proj)
    assert spread_after[0] < spread_before[0] / 3 and spread_after[1] < spread_before[1] / 3


def test_int8_linear_matches_the_direct_computation():
    torch.manual_seed(0)
    linear = nn.Linear(48, 24)
    layer = Int8DynamicLinear.from_linear(linear)
    x = torch.randn(3, 5, 48)
    codes, scales = quantize_rows(linear.weight)
    flat = x.reshape(-1, 48)
    x_scales = flat.abs().amax(dim=1, keepdim=True) / 127
    expected = (torch.round(flat / x_scales) * x_scales) @ (codes.float() * scales[:, None]).T + linear.bias
    with torch.no_grad():
        assert torch.allclose(layer(x).reshape(-1, 24), expected, atol=1e-5)
        assert layer(x).shape == (3, 5, 24)
    rebuilt = Int8DynamicLinear.from_dequantized(_linear_with(layer.dequantized_weight(), linear.bias), scales)
    assert torch.equal(rebuilt.weight, layer.weight)  # what the saved folder holds rounds back to the same codes
    assert layer.compression_info()["bits"] == pytest.approx(8 + 24 * 32 / (24 * 48))


def _linear_with(weight, bias):
    linear = nn.Linear(weight.shape[1], weight.shape[0])
    linear.weight.data, linear.bias.data = weight.clone(), bias.detach().clone()
    return linear


def test_one_scale_per_token_beats_one_scale_per_call():
    """A loud token no longer coarsens every other token's rounding."""
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    x = torch.randn(1, 16, 64)
    x[0, 0] *= 50.0
    layer = Int8DynamicLinear.from_linear(linear)
    with torch.no_grad():
        exact = linear(x)[0, 1:]
        per_token = layer(x)[0, 1:]
        scale = x.abs().max() / 127  # one scale for the whole call
        per_call = linear.bias + (torch.round(x / scale) * scale)[0, 1:] @ layer.dequantized_weight().T
    assert (per_token - exact).norm() < (per_call - exact).norm() / 5
