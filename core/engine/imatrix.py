"""llama.cpp's importance matrix computed by our block-by-block calibration engine.

For every Linear inside the model's blocks, the sum over every calibration token of each input channel's
square, Σ_t x_tj², and the number of tokens — what ``llama-imatrix`` collects from each matrix multiplication
(``IMatrixCollector::collect_imatrix``: ``acc[j] += x[j] * x[j]`` per row, ``counts += rows``).  The quantizer
(``llama-quantize --imatrix``) then weighs each weight column's rounding error by the mean square of the input
it multiplies, so the columns that carry large activations are rounded most carefully.

Like ``llama-imatrix`` (without ``--process-output``), only the blocks' weights are covered (``blk.N.*``): the
output head and embeddings are not.  The statistics fold into :class:`core.engine.calibration.InputNormStats`,
never stored activations; Linears that read the same input (q/k/v, gate/up) share one accumulator, so their
entries are equal, as llama.cpp's are.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch
from torch import nn

from core.engine.calibration import Block, InputNormStats, run_blockwise
from core.io.gguf_quantize import gguf_tensor_name
from core.io.imatrix_gguf import ImatrixEntry


def iter_importance_matrix(model: nn.Module, windows: torch.Tensor, device: str | torch.device | None = None,
                           ) -> Generator[Any, None, dict[str, ImatrixEntry]]:
    """Run ``windows`` [n, L] through ``model`` block by block; return llama.cpp weight name -> Σx² and count.

    Yields the engine's progress events (cancel points).  The model is not changed.
    """
    found: dict[str, ImatrixEntry] = {}

    def keep(block: Block) -> Generator[Any, None, None]:
        for name, stats in block.stats.items():
            # copied: the engine frees the block's statistics once this returns
            found[gguf_tensor_name(f"{name}.weight")] = ImatrixEntry(stats.sum_squares.detach().cpu().numpy().copy(),
                                                                     int(stats.tokens))
        yield from ()

    with torch.no_grad():
        yield from run_blockwise(model, windows, make_stats=InputNormStats, compress_block=keep, device=device,
                                 stage="Importance matrix")
    return found
