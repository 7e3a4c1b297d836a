"""The GGUF types the app writes, in plain words, with their approximate size (no numpy or torch: the Export
page reads this at start).

F16, Q8_0 and Q4_0 are written by our exporter (:mod:`core.io.gguf_export`); the K- and i-quants by llama.cpp's
quantizer (:mod:`core.io.gguf_quantize`).  Bits per weight are llama.cpp's for a large model; a model whose
widths are not multiples of 256 (SmolLM2-135M's 576) gets llama.cpp's fallback types for those tensors and
comes out somewhat larger.
"""

from __future__ import annotations

from core.errors import StudioError

DIRECT_TYPES = ("F16", "Q8_0", "Q4_0")
# type -> (one plain line, about how many bits a weight takes)
GGUF_TYPE_INFO: dict[str, tuple[str, float]] = {
    "F16": ("16-bit floats: the largest file, no quality loss", 16.0),
    "Q8_0": ("8-bit blocks: about half of F16, nearly no quality loss", 8.5),
    "Q6_K": ("6-bit K-quant: close to 8-bit quality at three quarters of its size", 6.6),
    "Q5_K_M": ("5-bit K-quant mix: about a third of F16, very small quality loss", 5.7),
    "Q4_K_M": ("the usual choice: 4-bit K-quant mix, under a third of F16, small quality loss", 4.9),
    "Q4_K_S": ("4-bit K-quant: a little smaller than Q4_K_M, a little more loss", 4.6),
    "Q4_0": ("4-bit blocks (the older kind): about a quarter of F16, some quality loss", 4.5),
    "IQ4_XS": ("4-bit non-linear i-quant: smaller than Q4_K_S at similar quality; best with an importance matrix",
               4.3),
    "Q3_K_M": ("3-bit K-quant mix: small, noticeable quality loss", 3.9),
    "Q2_K": ("2-bit K-quant: the smallest, clearly lower quality; use an importance matrix", 3.0),
}
QUANTIZER_TYPES = tuple(name for name in GGUF_TYPE_INFO if name not in DIRECT_TYPES)


def needs_quantizer(quant: str, with_imatrix: bool = False) -> bool:
    """Whether ``quant`` is made by llama-quantize (K- and i-quants, and Q8_0 / Q4_0 with an importance matrix)."""
    if quant not in GGUF_TYPE_INFO:
        raise StudioError(f"unknown GGUF type {quant!r}; choose one of {', '.join(GGUF_TYPE_INFO)}")
    return quant in QUANTIZER_TYPES or (with_imatrix and quant != "F16")


def estimated_bytes(parameters: int, quant: str) -> int:
    """About how large a GGUF of ``parameters`` weights is in ``quant`` (see the module docstring)."""
    return int(parameters * GGUF_TYPE_INFO[quant][1] / 8)
