"""llama.cpp's Q4_0 / Q8_0 blocks as a grid GPTQ can round onto, so the GGUF export keeps GPTQ's codes.

A GGUF file stores each block of 32 weights as a float16 scale ``d`` and integer codes, and
llama.cpp's quantizer (``gguf.quants``, which the export runs on the dequantized weights) derives
``d`` from the weights themselves: Q4_0 ``d = w[argmax |w|] / −8``, Q8_0 ``d = max |w| / 127``
(:func:`fake_quant.gguf_codes`).  A GPTQ result therefore survives export unchanged exactly when, in
every block, the element of largest magnitude sits on the extreme code (−8 for Q4_0, ±127 for Q8_0)
and every code lies in the type's range: then llama.cpp re-derives the same ``d`` and the same codes.

:func:`block_scales` gives each block its ``d`` by llama.cpp's rule from the weights it is given
(GPTQ passes the error-updated weights when it reaches the block, or the original ones with static
groups) and the column of the element that defines it; GPTQ forces that element's code to the
extreme when its column comes (:func:`force_extreme`) and compensates the error of that choice like
any other rounding.  ``d`` is further rounded to a value that float16 *and* bfloat16 hold exactly,
so saving the result in either dtype (the runner rounds packed scales to the save dtype) keeps it.
"""

from __future__ import annotations

import torch

from core.techniques.quantize.fake_quant import GGUF_GRIDS, gguf_codes

CODE_LIMITS = {"q4_0": (-8, 7), "q8_0": (-127, 127)}  # llama.cpp's code ranges (Q8_0 never uses −128)


def block_scales(weight: torch.Tensor, grid: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(d float32 [rows, blocks], extreme int64 [rows, blocks]) of ``weight`` [rows, columns]: each block's scale
    by llama.cpp's rule (exact in float16 and bfloat16) and the column inside the block that defines it."""
    _bits, block = GGUF_GRIDS[grid]
    rows, columns = weight.shape
    _codes, d, _inside = gguf_codes(weight, grid)
    # a value bfloat16 holds (8 significant bits) is also exact in float16 once rounded to its grid
    d = d.to(torch.bfloat16).to(torch.float16).to(torch.float32)
    magnitude = weight.detach().to(torch.float32).abs().reshape(rows, columns // block, block)
    extreme = magnitude.argmax(dim=-1)  # the first largest |w|, as gguf_codes / numpy pick it
    return d, extreme


def force_extreme(codes: torch.Tensor, weight: torch.Tensor, forced: torch.Tensor, grid: str) -> torch.Tensor:
    """``codes`` with the rows in ``forced`` set to the extreme code: −8 (Q4_0, whose d carries the sign) or
    ±127 by the sign of ``weight`` (Q8_0, whose d is positive)."""
    if grid == "q4_0":
        extreme = torch.full_like(codes, -8.0)
    else:
        extreme = torch.where(weight < 0, -127.0, 127.0).to(codes.dtype)
    return torch.where(forced, extreme, codes)
