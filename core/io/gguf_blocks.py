"""llama.cpp's Q4_0 / Q8_0 blocks written straight from a packed layer's codes and scales.

A block of 32 weights is stored as its scale ``d`` (float16, 2 bytes little-endian) and its codes
(ggml-quants.c ``block_q4_0`` / ``block_q8_0``, as ``gguf.quants`` reads them):

- Q4_0: 16 bytes, byte ``j`` = ``(q[j] + 8) | (q[j + 16] + 8) << 4`` for codes ``q`` in −8..7;
- Q8_0: 32 signed bytes, codes in −127..127 (llama.cpp's own quantizer never writes −128).

The value of weight ``i`` is ``d · q[i]`` in float32.  Writing the blocks from the codes, instead of
handing the dequantized values to a quantizer that derives ``d`` again, keeps *any* float16 scale
(e.g. one GPTQ chose by a weighted search, or one trained) and every code bit for bit.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
CODE_RANGES = {"Q4_0": (-8, 7), "Q8_0": (-127, 127)}


def blocks_fit(codes: np.ndarray, scales: np.ndarray, quant: str) -> bool:
    """Whether ``codes`` [rows, columns] and ``scales`` [rows, columns / 32] are exactly a ``quant`` tensor:
    every code in the type's range and every scale a finite float16 value."""
    if quant not in CODE_RANGES or codes.shape[-1] % BLOCK or scales.shape[-1] * BLOCK != codes.shape[-1]:
        return False
    low, high = CODE_RANGES[quant]
    scales = scales.astype(np.float32)
    half = scales.astype(np.float16)
    return bool(codes.min(initial=0) >= low and codes.max(initial=0) <= high and np.all(np.isfinite(half))
                and np.array_equal(half.astype(np.float32), scales))


def pack_blocks(codes: np.ndarray, scales: np.ndarray, quant: str) -> np.ndarray:
    """uint8 [rows, blocks · bytes per block]: ``codes`` int [rows, columns] with ``scales`` float [rows, blocks]
    as llama.cpp's ``quant`` blocks (check :func:`blocks_fit` first: scales are cast to float16 here)."""
    rows, columns = codes.shape
    blocks = columns // BLOCK
    d = scales.astype(np.float16).reshape(rows * blocks, 1).view(np.uint8)  # 2 bytes, little-endian
    q = codes.astype(np.int16).reshape(rows * blocks, BLOCK)
    if quant == "Q4_0":
        unsigned = (q + 8).astype(np.uint8)
        payload = unsigned[:, :BLOCK // 2] | (unsigned[:, BLOCK // 2:] << np.uint8(4))
    elif quant == "Q8_0":
        payload = q.astype(np.int8).view(np.uint8)
    else:
        raise ValueError(f"no block layout for {quant}")
    return np.concatenate([d, payload], axis=1).reshape(rows, -1)
