"""``QATLinear``: a Linear trained through fake quantization, and its conversion to ``PackedLinear``.

The module holds the float ("latent") weight as its trainable parameter and computes
``x ŴT + b`` with Ŵ the weight rounded to its grid (:mod:`fake_quant`).  ``to_packed`` stores the
same codes and scales in a :class:`PackedLinear`, whose reference forward pass computes the very
same Ŵ, so the converted model gives bit-identical logits (the CPU int4 kernel, where a 4-bit layer
uses it, rounds activations to bfloat16: see :mod:`packed_linear`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.techniques.quantize.fake_quant import (
    GGUF_GRIDS,
    gguf_codes,
    gguf_fake_quantize,
    int_codes,
    int_fake_quantize,
    int_fake_quantize_learned_scale,
)
from core.techniques.quantize.grid import dequantize, fit_group_params
from core.techniques.quantize.packed_linear import PackedLinear

GRIDS = ("int", *GGUF_GRIDS)

# A learned scale is s₀ · exp(SCALE_RATE · g) with g trained from 0.  Adam moves g by about the learning
# rate per step whatever the gradient's size, so SCALE_RATE is the scales' learning rate relative to the
# weights': at the QAT learning rate 3e-5 a scale may change ~0.3% per step while a latent weight moves
# ~3e-5 (a fraction of a percent of a 3-bit step).  Measured on the bundled model, RTN 3-bit g64, 6 steps
# of 4 × 128 tokens: held-out perplexity 128 → 63 at 100 (and the same with 30 at lr 1e-4); with fixed
# scales it does not move at all in 12 steps.  Multiplicative, so a scale never changes sign or reaches 0.
SCALE_RATE = 100.0


class QATLinear(nn.Module):
    """A Linear whose forward pass uses its weight fake-quantized on ``grid``.

    ``int``: per-group ``weight_scale`` / ``weight_zero_point`` buffers (the starting grid), the scales
    fixed or, with ``learn_scale``, trained as ``weight_scale · exp(SCALE_RATE · scale_log_gain)``
    (zero points stay fixed: they are integers);
    ``q4_0`` / ``q8_0``: llama.cpp's blocks, the scale re-derived from the weight at every call.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, bits: int, group_size: int,
                 symmetric: bool, grid: str = "int", scale: torch.Tensor | None = None,
                 zero: torch.Tensor | None = None, learn_scale: bool = False):
        super().__init__()
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; use one of {GRIDS}")
        self.out_features, self.in_features = weight.shape
        self.bits, self.group_size, self.symmetric, self.grid = bits, group_size, symmetric, grid
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        if grid == "int":
            self.register_buffer("weight_scale", scale.detach().to(weight.dtype).clone())
            self.register_buffer("weight_zero_point", None if zero is None else zero.detach().to(torch.int8).clone())
        else:
            self.weight_scale = self.weight_zero_point = None
        self.learn_scale = learn_scale and grid == "int"
        self.scale_log_gain = nn.Parameter(torch.zeros_like(self.weight_scale, dtype=torch.float32)
                                           ) if self.learn_scale else None

    def current_scale(self) -> torch.Tensor:
        """The int grid's per-group scale now, in the dtype it is stored in (with a gradient when it trains)."""
        if not self.learn_scale:
            return self.weight_scale
        return (self.weight_scale.to(torch.float32) * torch.exp(SCALE_RATE * self.scale_log_gain)
                ).to(self.weight_scale.dtype)

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int, symmetric: bool, grid: str = "int",
                    clip: str = "none", learn_scale: bool = False) -> QATLinear:
        """Start from a float Linear: on an int grid the scales are RTN's (min-max or MSE-clipped) of its weight."""
        scale = zero = None
        if grid == "int":
            scale, zero = fit_group_params(linear.weight, bits, group_size, symmetric, dtype=linear.weight.dtype,
                                           clip=clip)
        return cls(linear.weight, linear.bias, bits, group_size, symmetric, grid, scale, zero, learn_scale)

    @classmethod
    def from_packed(cls, packed: PackedLinear, learn_scale: bool = False) -> QATLinear:
        """Start from a quantized layer (RTN, GPTQ): its grid is kept and the latent weight is its Ŵ, so the
        first forward pass equals the packed layer's exactly."""
        return cls(packed.dequantized_weight().to(packed.weight_scale.dtype), packed.bias, packed.bits,
                   packed.group_size, packed.symmetric, "int", packed.weight_scale, packed.zeros(), learn_scale)

    def quantized(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(codes, scale, zero) of the current weight on this layer's grid."""
        if self.grid == "int":
            scale = self.current_scale().detach()
            codes, _ = int_codes(self.weight, scale, self.weight_zero_point, self.bits)
            return codes, scale, self.weight_zero_point
        codes, scale, _ = gguf_codes(self.weight, self.grid)
        return codes, scale.to(self.weight.dtype), None

    def quantized_weight(self) -> torch.Tensor:
        """Ŵ without gradient: what the converted layer will hold."""
        with torch.no_grad():
            codes, scale, zero = self.quantized()
            return dequantize(codes, scale, zero).to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.learn_scale:
            weight = int_fake_quantize_learned_scale(self.weight, self.current_scale(), self.weight_zero_point,
                                                     self.bits)
        elif self.grid == "int":
            weight = int_fake_quantize(self.weight, self.weight_scale, self.weight_zero_point, self.bits)
        else:
            weight = gguf_fake_quantize(self.weight, self.grid)
        return F.linear(x, weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def to_packed(self) -> PackedLinear:
        """The PackedLinear holding exactly this layer's current codes and scales."""
        with torch.no_grad():
            codes, scale, zero = self.quantized()
            return PackedLinear.from_linear(self, codes, scale, zero, self.bits, self.group_size, self.symmetric)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, symmetric={self.symmetric}, grid={self.grid}, "
                f"learn_scale={self.learn_scale}")
