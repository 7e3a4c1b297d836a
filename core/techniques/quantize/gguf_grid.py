"""llama.cpp's Q4_0 / Q8_0 blocks as a grid GPTQ can round onto, so the GGUF export keeps GPTQ's codes.

A GGUF Q4_0 / Q8_0 block stores 32 weights as a float16 scale ``d`` and integer codes (−8..7 / −127..127),
and any float16 ``d`` is allowed.  The GGUF export writes a packed layer's blocks straight from its codes and
scales (:mod:`core.io.gguf_blocks`), so GPTQ may choose each block's ``d`` freely.

:func:`block_scales` chooses it as llama.cpp does when it quantizes Q4_0 with an importance matrix
(ggml-quants.c ``make_qx_quants``): starting from the reference rule (Q4_0 ``d = w[argmax |w|] / −8``,
Q8_0 ``d = max |w| / 127``) it tries 19 steps ``d / (1 + k/80)``, k = −9..9, rounds the block with each,
takes the least-squares scale of those codes, ``Σ hᵢ wᵢ qᵢ / Σ hᵢ qᵢ²``, and keeps the one with the smallest
weighted error ``Σ hᵢ (wᵢ − d qᵢ)²``.  The weights ``h`` are the Hessian's diagonal (llama.cpp's imatrix is
the same per-input sum of squared activations).  GPTQ calls it when it reaches a block, on the weights its
error updates have moved (on the original ones with static groups / act-order).  ``d`` is then rounded to a
value that float16 *and* bfloat16 hold exactly, so saving the result in either dtype (the runner rounds
packed scales to the save dtype) keeps it.
"""

from __future__ import annotations

import torch

from core.techniques.quantize.fake_quant import GGUF_GRIDS

CODE_LIMITS = {"q4_0": (-8, 7), "q8_0": (-127, 127)}  # llama.cpp's code ranges (Q8_0 never uses −128)
STEPS = range(-9, 10)  # make_qx_quants' scale steps: 1/d = (nmax + 0.1 k) / max


def block_scales(weight: torch.Tensor, grid: str, importance: torch.Tensor) -> torch.Tensor:
    """d float32 [rows, blocks] of ``weight`` [rows, columns]: each block's scale by the weighted search above
    (weights ``importance`` [columns], ≥ 0), exact in float16 and bfloat16; 0 for an all-zero block."""
    _bits, block = GGUF_GRIDS[grid]
    low, high = CODE_LIMITS[grid]
    rows, columns = weight.shape
    x = weight.detach().to(torch.float32).reshape(rows, columns // block, block)
    h = importance.detach().to(device=x.device, dtype=torch.float32).reshape(1, columns // block, block)
    peak = torch.gather(x, -1, x.abs().argmax(dim=-1, keepdim=True))  # the block's largest |w|, signed
    reference = peak / -8 if grid == "q4_0" else peak.abs() / 127  # llama.cpp's rule without an imatrix
    zero = reference == 0
    reference = torch.where(zero, torch.ones_like(reference), reference)
    best_d = torch.zeros_like(reference)
    best = torch.full_like(reference, -1.0)
    for k in STEPS:
        codes = torch.clamp(torch.round(x / (reference / (1 + k / 80))), low, high)
        sumlx = (h * x * codes).sum(-1, keepdim=True)
        suml2 = (h * codes * codes).sum(-1, keepdim=True)
        # Σh(w − d q)² = Σhw² − sumlx²/suml2 at the least-squares d: the largest sumlx²/suml2 wins
        gain = torch.where(suml2 > 0, sumlx * sumlx / suml2.clamp_min(1e-30), torch.zeros_like(suml2))
        better = gain > best
        best = torch.where(better, gain, best)
        best_d = torch.where(better, torch.where(suml2 > 0, sumlx / suml2.clamp_min(1e-30), reference), best_d)
    best_d = torch.where(zero, torch.zeros_like(best_d), best_d)
    # a value bfloat16 holds (8 significant bits) is also exact in float16 once rounded to its grid
    return best_d.squeeze(-1).to(torch.bfloat16).to(torch.float16).to(torch.float32)
