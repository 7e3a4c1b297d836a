"""Integer grids for weight-only quantization: per-group scales, codes, and dense bit packing.

Conventions (the same as the compressed-tensors "pack-quantized" format, so our buffers are
that format's tensors):

- codes are *signed* integers in [-2^(b-1), 2^(b-1) - 1], held in int8;
- ŵ = (code - zero) · scale, with one scale (and, if asymmetric, one zero point) per output
  row and group of ``group_size`` consecutive input columns; ``group_size = 0`` means one
  group per row (per-channel);
- symmetric: zero = 0 and scale = max|w| / ((2^b - 1) / 2);
  asymmetric (min-max): the range [min(w, 0), max(w, 0)] is spread over all 2^b levels and the
  zero point is the code that represents 0.0 exactly;
- packing: each row's codes, shifted to unsigned (code + 2^(b-1)), are written as one
  little-endian bit stream (code i starts at bit i·b) into int32 words: ⌈columns·b / 32⌉ words
  a row, no padding bits between codes.

Widths not divisible by the group size are *rejected* (:func:`check_group_size`) instead of
getting a smaller remainder group, because compressed-tensors, transformers and vLLM only read
equal groups; the message names the group sizes that do divide the width.
"""

from __future__ import annotations

import math

import torch
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

from core.errors import RecipeError


def code_range(bits: int) -> tuple[int, int]:
    """The smallest and largest signed code for ``bits`` (e.g. 4 -> (-8, 7))."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def valid_group_sizes(width: int) -> list[int]:
    """Group sizes that divide ``width``: multiples of 32 (what kernels like), else any divisor ≥ 8."""
    sizes = [g for g in range(32, width + 1, 32) if width % g == 0]
    return sizes or [g for g in range(8, width + 1) if width % g == 0] or [width]


def check_group_size(width: int, group_size: int, layer: str = "this layer", all_widths: list[int] | None = None) -> None:
    """Raise RecipeError, naming the valid choices, unless ``group_size`` splits ``width`` evenly.

    ``all_widths``: the input widths of every layer the step targets; the suggested sizes then divide
    all of them (a size that fits this layer but not the next would only fail again).
    """
    if group_size and (group_size > width or width % group_size):
        widths = sorted(set(all_widths or [width]))
        choices = ", ".join(str(g) for g in valid_group_sizes(math.gcd(*widths)))
        others = (f" (the targeted layers have {', '.join(str(w) for w in widths[:-1])} and {widths[-1]} inputs; "
                  "these sizes divide them all)") if len(widths) > 1 else ""
        raise RecipeError(f"{layer} has {width} inputs, which group size {group_size} does not divide "
                          f"(groups must be equal; no remainder group is made): choose one of {choices}{others}, "
                          "or 0 for one scale per output channel")


def _grouped(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    rows, columns = weight.shape
    size = group_size or columns
    check_group_size(columns, size)
    return weight.reshape(rows, columns // size, size)


def group_params(weight: torch.Tensor, bits: int, group_size: int, symmetric: bool,
                 dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Min-max scale [rows, groups] (float32, already rounded to ``dtype``) and zero [rows, groups] int8.

    The zero point is None when symmetric.  All-zero groups get scale 1 so nothing divides by 0.
    """
    low, high = code_range(bits)
    groups = _grouped(weight.detach().to(torch.float32), group_size)
    if symmetric:
        scale = groups.abs().amax(dim=-1) / ((high - low) / 2)
    else:
        # Include 0 in the range so that it is represented exactly (padding, dead inputs).
        wmin = groups.amin(dim=-1).clamp(max=0)
        wmax = groups.amax(dim=-1).clamp(min=0)
        scale = (wmax - wmin) / (high - low)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    if dtype is not None:  # quantize against the scale exactly as it will be stored
        scale = scale.to(dtype).to(torch.float32)
    if symmetric:
        return scale, None
    zero = torch.round(low - wmin / scale).clamp(low, high).to(torch.int8)
    return scale, zero


def _shrunk_params(groups: torch.Tensor, shrink: torch.Tensor, bits: int, symmetric: bool,
                   dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Min-max parameters of ``groups`` [..., size] after scaling the range by ``shrink`` [...]."""
    low, high = code_range(bits)
    if symmetric:
        scale = groups.abs().amax(dim=-1) * shrink / ((high - low) / 2)
    else:
        wmin = groups.amin(dim=-1).clamp(max=0) * shrink
        wmax = groups.amax(dim=-1).clamp(min=0) * shrink
        scale = (wmax - wmin) / (high - low)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    if dtype is not None:
        scale = scale.to(dtype).to(torch.float32)
    if symmetric:
        return scale, None
    return scale, torch.round(low - wmin / scale).clamp(low, high)


def mse_group_params(weight: torch.Tensor, bits: int, group_size: int, symmetric: bool,
                     dtype: torch.dtype | None = None, *, max_shrink: float = 0.8, grid: int = 100,
                     norm: float = 2.0, importance: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Clipped per-group parameters: like :func:`group_params`, with each group's range shrunk.

    For every group the range is scaled by a factor p in [1 − max_shrink, 1] and the p giving the
    smallest Σ importance·|w − ŵ|^norm over the group is kept (the search of the GPTQ reference's
    ``mse`` option and llm-compressor's MSE observer, which use norm 2.4; AWQ's clip search is the
    same idea measured on layer outputs).  Clipping the few largest weights shrinks the step for
    all the others, which usually lowers the total error at 2–4 bits.  The search is coarse to
    fine: steps of 5/grid over the whole interval, then steps of 1/grid around each group's best,
    so about a third of the evaluations of a full 1/grid sweep.  p = 1 (plain min-max) is always a
    candidate, so the error never exceeds min-max rounding's.  ``importance`` [columns] weights
    each input column (e.g. the Hessian diagonal: how much that input's error costs on the output).
    """
    groups = _grouped(weight.detach().to(torch.float32), group_size)  # [rows, groups, size]
    weights = None
    if importance is not None:
        weights = importance.detach().to(torch.float32).reshape(1, groups.shape[1], groups.shape[2])
    coarse = 5
    steps = list(range(0, int(max_shrink * grid) + 1, coarse))
    state = _ClipSearch(groups, bits, symmetric, dtype, norm, weights)
    for step in steps:
        state.try_shrink(torch.full(groups.shape[:2], 1 - step / grid, device=groups.device))
    best_step = state.best_shrink.clone()
    for offset in range(-(coarse - 1), coarse):
        if offset:
            candidate = (best_step + offset / grid).clamp(1 - max_shrink, 1.0)
            state.try_shrink(candidate)
    return state.best_scale, (state.best_zero.to(torch.int8) if state.best_zero is not None else None)


class _ClipSearch:
    """Keeps, per group, the best (lowest error) parameters among the shrink factors tried."""

    def __init__(self, groups, bits, symmetric, dtype, norm, weights):
        self.groups, self.bits, self.symmetric, self.dtype = groups, bits, symmetric, dtype
        self.norm, self.weights = norm, weights
        self.low, self.high = code_range(bits)
        shape, device = groups.shape[:2], groups.device
        self.best_error = torch.full(shape, float("inf"), device=device)
        self.best_shrink = torch.ones(shape, device=device)
        self.best_scale = torch.ones(shape, device=device)
        self.best_zero = None if symmetric else torch.zeros(shape, device=device)

    def try_shrink(self, shrink: torch.Tensor) -> None:
        scale, zero = _shrunk_params(self.groups, shrink, self.bits, self.symmetric, self.dtype)
        step = scale.unsqueeze(-1)
        scaled = self.groups / step
        if zero is not None:
            scaled.add_(zero.unsqueeze(-1))
        approx = scaled.round_().clamp_(self.low, self.high)
        if zero is not None:
            approx.sub_(zero.unsqueeze(-1))
        diff = approx.mul_(step).sub_(self.groups).abs_()
        error = diff.square_() if self.norm == 2 else diff.pow_(self.norm)
        if self.weights is not None:
            error.mul_(self.weights)
        error = error.sum(dim=-1)
        better = error < self.best_error
        self.best_error = torch.where(better, error, self.best_error)
        self.best_shrink = torch.where(better, shrink, self.best_shrink)
        self.best_scale = torch.where(better, scale, self.best_scale)
        if zero is not None:
            self.best_zero = torch.where(better, zero, self.best_zero)


def fit_group_params(weight: torch.Tensor, bits: int, group_size: int, symmetric: bool,
                     dtype: torch.dtype | None = None, clip: str = "none",
                     importance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-group parameters by the chosen ``clip`` method: "none" (min-max) or "mse" (clip search)."""
    if clip == "mse":
        return mse_group_params(weight, bits, group_size, symmetric, dtype, importance=importance)
    if clip != "none":
        raise ValueError(f"unknown clip method {clip!r}; use 'none' or 'mse'")
    return group_params(weight, bits, group_size, symmetric, dtype)


def quantize(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int) -> torch.Tensor:
    """Codes (int8, signed) of ``weight`` [rows, columns] for per-group ``scale``/``zero`` [rows, groups]."""
    low, high = code_range(bits)
    rows, columns = weight.shape
    groups = weight.detach().to(torch.float32).reshape(rows, scale.shape[1], -1)
    scaled = groups / scale.unsqueeze(-1)
    if zero is not None:
        scaled = scaled + zero.to(torch.float32).unsqueeze(-1)
    return torch.round(scaled).clamp(low, high).to(torch.int8).reshape(rows, columns)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
    """ŵ = (code - zero) · scale, in the scale's dtype, shaped like ``codes``."""
    rows, columns = codes.shape
    values = codes.reshape(rows, scale.shape[1], -1).to(scale.dtype)
    if zero is not None:
        values = values - zero.to(scale.dtype).unsqueeze(-1)
    return (values * scale.unsqueeze(-1)).reshape(rows, columns)


def round_to_grid(weight: torch.Tensor, bits: int, group_size: int, symmetric: bool,
                  dtype: torch.dtype | None = None, clip: str = "none"
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Round-to-nearest: (codes, scale, zero) of ``weight`` with min-max (or MSE-clipped) parameters."""
    scale, zero = fit_group_params(weight, bits, group_size, symmetric, dtype, clip)
    return quantize(weight, scale, zero, bits), scale, zero


# ------------------------------------------------------------------------------------ bit packing
def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ValueError(f"packing supports 1 to 8 bits, got {bits}")


def pack_int(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack signed int8 codes [rows, columns] densely into int32 words [rows, ⌈columns·bits/32⌉].

    compressed-tensors' own packer, so the words are exactly what its loaders read.
    """
    _check_bits(bits)
    return pack_to_int32(codes.to(torch.int8), bits)


def unpack_int(packed: torch.Tensor, bits: int, columns: int) -> torch.Tensor:
    """Exact inverse of :func:`pack_int`: int32 words -> signed int8 codes [rows, columns].

    A packed layer's forward unpacks on every call, so the common widths (those dividing 32: each
    word holds whole codes) take one broadcast shift: 4× faster than the general loop at 4 bits.
    compressed-tensors' ``unpack_from_int32`` gives the same codes but is slower where it matters here
    (measured on a 1536×576 layer: 1.99 ms against 0.46 ms at 8 bits, 2.37 against 0.48 at 2 bits).
    """
    _check_bits(bits)
    rows = packed.shape[0]
    mask = (1 << bits) - 1
    if 32 % bits == 0:
        # Arithmetic shifts fill the top with sign bits, but the mask keeps only the code's own bits.
        shifts = torch.arange(0, 32, bits, dtype=torch.int32, device=packed.device)
        codes = ((packed.unsqueeze(-1) >> shifts) & mask).reshape(rows, -1)[:, :columns]
    else:  # 32 codes fill exactly ``bits`` words; code i starts at bit i·bits of its group of words
        count = packed.shape[1]
        words = packed.to(torch.int64) & 0xFFFFFFFF
        padded = math.ceil(count / bits) * bits
        words = torch.nn.functional.pad(words, (0, padded - count)).reshape(rows, -1, bits)
        codes = torch.empty(rows, words.shape[1], 32, dtype=torch.int64, device=packed.device)
        for i in range(32):
            word, offset = divmod(i * bits, 32)
            value = words[:, :, word] >> offset
            if offset + bits > 32:
                value = value | (words[:, :, word + 1] << (32 - offset))
            codes[:, :, i] = value & mask
        codes = codes.reshape(rows, -1)[:, :columns]
    return (codes - (1 << (bits - 1))).to(torch.int8)
