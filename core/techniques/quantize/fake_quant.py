"""Fake quantization with a straight-through estimator, on exactly the grids the app saves.

Quantization-aware training computes the forward pass with every targeted weight already rounded
to its grid (ŵ), so the loss sees the quantized model, while the gradient updates a float copy
("latent" weights).  Rounding has a zero gradient almost everywhere, so the backward pass treats
it as the identity (the straight-through estimator, Bengio et al. 2013), except for weights more
than half a step beyond a fixed grid's range: those get no gradient (PyTorch's and torchao's fake
quantizers mask the same way, on the rounded value).

Why not torchao's ``QATConfig`` / ``IntxFakeQuantizer``: torchao (and its 0.18 QAT API) is not
installed here, and its fake-quantizers do not reproduce our grids bit for bit: they derive the
scale with their own epsilon clamps and zero-point rules (``choose_qparams_affine``), keep
scales/zeros in their own dtypes and round half to even, while this app's packed format
(:mod:`grid`) uses min-max ranges that always include 0, a zero point rounded from ``low − min/scale``,
scales rounded to the weight dtype first and GPTQ's / MSE-clipped ranges; and llama.cpp's Q4_0 /
Q8_0 blocks use yet another scale rule (see below).  A result must reload with exactly the logits
training ended with and export to GGUF without a second rounding, so the forward pass here *calls
the packing code itself* (:func:`grid.quantize` then :func:`grid.dequantize`) and only the few
lines of the gradient are new.

Grids:

* ``int``: the compressed-tensors grid of RTN/GPTQ: codes in [−2^(b−1), 2^(b−1) − 1], per-group
  ``scale`` and (asymmetric) ``zero`` held *fixed* during training (from min-max / MSE rounding of
  the float weights, or kept from a GPTQ / RTN step before), so the saved scales are the trained ones;
* ``q4_0`` / ``q8_0``: llama.cpp's blocks of 32 (``ggml-quants.c``, ``gguf.quants``): the scale is
  re-derived from the weights at every forward pass, as llama.cpp will derive it at export —
  Q4_0: d = w[argmax |w|] / −8 (signed, so the largest weight sits exactly on code −8),
  q = trunc(w · (1/d) + 8.5) clipped to 0..15, code q − 8; Q8_0: d = max|w| / 127,
  code = round-half-away(w · (1/d)); the scale is stored as float16.  Re-quantizing ŵ with those
  rules gives back the same d and codes, so GGUF export writes exactly the trained values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from core.techniques.quantize.grid import code_range, dequantize

GGUF_GRIDS = {"q4_0": (4, 32), "q8_0": (8, 32)}  # grid -> (bits, block size)


def int_codes(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes int8, inside mask) of ``weight`` on a fixed int grid: :func:`grid.quantize`'s math, plus which
    weights were not clamped (they get the straight-through gradient)."""
    low, high = code_range(bits)
    rows, columns = weight.shape
    groups = weight.detach().to(torch.float32).reshape(rows, scale.shape[1], -1)
    scaled = groups / scale.to(torch.float32).unsqueeze(-1)
    if zero is not None:
        scaled = scaled + zero.to(torch.float32).unsqueeze(-1)
    # Inside: within half a step of the code range (so the largest weight of a symmetric min-max group, at
    # code 2^(b-1) − 0.5 before rounding, give or take the division's last bit, still trains); beyond it moving w
    # changes nothing until it comes back.
    margin = 0.5 + 1e-3
    inside = (scaled >= low - margin) & (scaled <= high + margin)
    codes = torch.round(scaled).clamp(low, high).to(torch.int8)
    return codes.reshape(rows, columns), inside.reshape(rows, columns)


def _roundf(values: torch.Tensor) -> torch.Tensor:
    """Round half away from zero exactly as gguf's ``np_roundf`` (ggml's roundf): sign · (⌊a⌋ + ⌊2(a − ⌊a⌋)⌋)."""
    a = values.abs()
    floored = torch.floor(a)
    return torch.sign(values) * (floored + torch.floor(2 * (a - floored)))


def gguf_codes(weight: torch.Tensor, grid: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes int8 [rows, columns], scale float32 [rows, blocks] holding float16 values, inside mask) of
    ``weight`` by llama.cpp's Q4_0 / Q8_0 rule, in float32 operation for operation as ``gguf.quants``."""
    bits, block = GGUF_GRIDS[grid]
    rows, columns = weight.shape
    blocks = weight.detach().to(torch.float32).reshape(rows, columns // block, block)
    if grid == "q4_0":
        index = blocks.abs().argmax(dim=-1, keepdim=True)  # first largest |w|, as numpy's argmax
        d = torch.gather(blocks, -1, index) / -8
        inverse = torch.where(d == 0, torch.zeros_like(d), 1 / d)
        codes = torch.trunc(blocks * inverse + 8.5).clamp(0, 15) - 8
    else:
        d = blocks.abs().amax(dim=-1, keepdim=True) / 127
        inverse = torch.where(d == 0, torch.zeros_like(d), 1 / d)
        codes = _roundf(blocks * inverse)
    # The scale follows the block's largest weight, so no weight lies beyond half a step of the range.
    inside = torch.ones_like(codes, dtype=torch.bool)
    scale = d.squeeze(-1).to(torch.float16).to(torch.float32)  # stored as float16, as in the file
    return (codes.to(torch.int8).reshape(rows, columns), scale, inside.reshape(rows, columns))


class _StraightThrough(torch.autograd.Function):
    """Forward: ŵ from ``quantizer``; backward: the gradient passes unchanged where w was not clamped."""

    @staticmethod
    def forward(ctx, weight, quantizer):
        values, inside = quantizer(weight)
        ctx.save_for_backward(inside)
        return values

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None


def fake_quantize(weight: torch.Tensor, quantizer: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                  ) -> torch.Tensor:
    """ŵ = ``quantizer(weight)[0]`` with the straight-through gradient; ``quantizer`` returns (ŵ, inside)."""
    return _StraightThrough.apply(weight, quantizer)


def int_fake_quantize(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int
                      ) -> torch.Tensor:
    """ŵ on the fixed int grid, equal bit for bit to ``dequantize(quantize(weight, scale, zero, bits), …)``."""
    def quantizer(w):
        codes, inside = int_codes(w, scale, zero, bits)
        return dequantize(codes, scale, zero).to(w.dtype), inside

    return fake_quantize(weight, quantizer)


def int_fake_quantize_learned_scale(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                                    bits: int) -> torch.Tensor:
    """ŵ on an int grid whose per-group ``scale`` trains too; the forward value is exactly
    :func:`int_fake_quantize`'s (the packing code's codes and dequantization with the current scale), so
    conversion stays bit-exact.

    Gradients: ∂ŵ/∂w = 1 inside the range, 0 where clamped (the straight-through estimator, as
    :func:`int_fake_quantize`), and ∂ŵ/∂s = q − z, the exact derivative of ŵ = (q − z) · s with the codes
    held, as PEQA (Kim et al. 2023) and EfficientQAT's end-to-end phase (Chen et al. 2024) train scales.
    Not LSQ's (q − z) − w/s: that term is 0 wherever the latent weight sits on its grid point, which is
    every weight when QAT starts from a GPTQ / RTN result, and Adam then turns rounding noise into
    full-size random steps of the scales (measured: validation perplexity 158 → 228 in 6 steps).
    """
    codes, inside = int_codes(weight, scale, zero, bits)
    exact = dequantize(codes, scale.detach(), zero).to(weight.dtype)
    rows, columns = weight.shape
    levels = codes.reshape(rows, scale.shape[1], -1).to(torch.float32)
    if zero is not None:
        levels = levels - zero.to(torch.float32).unsqueeze(-1)
    scale32 = scale.to(torch.float32).unsqueeze(-1)
    through_scale = (levels * (scale32 - scale32.detach())).reshape(rows, columns)  # value 0, gradient q − z
    through_weight = inside.to(weight.dtype) * (weight - weight.detach())  # value 0, gradient 1 inside
    return exact + through_weight + through_scale.to(weight.dtype)


def gguf_fake_quantize(weight: torch.Tensor, grid: str) -> torch.Tensor:
    """ŵ on llama.cpp's Q4_0 / Q8_0 blocks (scale re-derived from ``weight``), with the straight-through gradient."""
    def quantizer(w):
        codes, scale, inside = gguf_codes(w, grid)
        return dequantize(codes, scale, None).to(w.dtype), inside

    return fake_quantize(weight, quantizer)
