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
)
from core.techniques.quantize.grid import dequantize, fit_group_params
from core.techniques.quantize.packed_linear import PackedLinear

GRIDS = ("int", *GGUF_GRIDS)


class QATLinear(nn.Module):
    """A Linear whose forward pass uses its weight fake-quantized on ``grid``.

    ``int``: fixed per-group ``weight_scale`` / ``weight_zero_point`` buffers (the starting grid);
    ``q4_0`` / ``q8_0``: llama.cpp's blocks, the scale re-derived from the weight at every call.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, bits: int, group_size: int,
                 symmetric: bool, grid: str = "int", scale: torch.Tensor | None = None,
                 zero: torch.Tensor | None = None):
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

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int, symmetric: bool, grid: str = "int",
                    clip: str = "none") -> QATLinear:
        """Start from a float Linear: on an int grid the scales are RTN's (min-max or MSE-clipped) of its weight."""
        scale = zero = None
        if grid == "int":
            scale, zero = fit_group_params(linear.weight, bits, group_size, symmetric, dtype=linear.weight.dtype,
                                           clip=clip)
        return cls(linear.weight, linear.bias, bits, group_size, symmetric, grid, scale, zero)

    @classmethod
    def from_packed(cls, packed: PackedLinear) -> QATLinear:
        """Start from a quantized layer (RTN, GPTQ): its grid is kept and the latent weight is its Ŵ, so the
        first forward pass equals the packed layer's exactly."""
        return cls(packed.dequantized_weight().to(packed.weight_scale.dtype), packed.bias, packed.bits,
                   packed.group_size, packed.symmetric, "int", packed.weight_scale, packed.zeros())

    def quantized(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(codes, scale, zero) of the current weight on this layer's grid."""
        if self.grid == "int":
            codes, _ = int_codes(self.weight, self.weight_scale, self.weight_zero_point, self.bits)
            return codes, self.weight_scale, self.weight_zero_point
        codes, scale, _ = gguf_codes(self.weight, self.grid)
        return codes, scale.to(self.weight.dtype), None

    def quantized_weight(self) -> torch.Tensor:
        """Ŵ without gradient: what the converted layer will hold."""
        with torch.no_grad():
            codes, scale, zero = self.quantized()
            return dequantize(codes, scale, zero).to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid == "int":
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
                f"group_size={self.group_size}, symmetric={self.symmetric}, grid={self.grid}")
