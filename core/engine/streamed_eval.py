"""Perplexity of a streamed model (:mod:`core.models.streaming`): the windows go block by block.

Every window's hidden states pass block 0 of the model, then block 1, … (each block read from the
weight files once, through the calibration engine), then the final norm and the output head; the
scoring is :func:`core.eval.perplexity.iter_perplexity`'s, window by window, so the two agree within
float noise on the same windows.  Only Llama-shaped causal LMs (blocks, then ``base_model.norm``,
then the output head) are scored this way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from typing import Any

import torch
import torch.nn.functional as F

from core.data.perplexity_windows import PerplexityWindows
from core.engine.calibration import find_blocks, run_blockwise
from core.errors import RecipeError
from core.eval.perplexity import PerplexityResult


def final_layers(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(final norm, output head) after the blocks; RecipeError when the model is not shaped that way."""
    norm = getattr(getattr(model, "base_model", None), "norm", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if norm is None or head is None or getattr(model.config, "final_logit_softcapping", None):
        raise RecipeError(f"streaming scores only Llama-shaped causal LMs (blocks, a final norm, an output head); "
                          f"{type(model).__name__} is not: set model.stream: false")
    return norm, head


def iter_streamed_perplexity(model: torch.nn.Module, windows: torch.Tensor | PerplexityWindows,
                             device: str | torch.device = "cpu") -> Generator[Any, None, PerplexityResult]:
    """Perplexity of a streamed model on ``windows``, yielding progress (the method of ``iter_perplexity``)."""
    if not isinstance(windows, PerplexityWindows):
        windows = PerplexityWindows.plain(windows)
    norm, head = final_layers(model)
    tokens = windows.tokens
    last = len(find_blocks(model)[1]) - 1
    final: list[torch.Tensor] = []
    start = time.perf_counter()

    def keep_last(block, _inputs, outputs):
        if block.index == last:
            final.extend(outputs)
        yield from ()

    # the model reads every id but the last (right padding is never seen by earlier positions)
    yield from run_blockwise(model, tokens[:, :-1], observe_block=keep_last, device=device, stage="perplexity")
    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode():
        for row, hidden in enumerate(final):
            logits = head(norm(hidden))[0]
            begin, end = windows.first_scored[row], windows.lengths[row] - 1
            nll = F.cross_entropy(logits[begin:end].float(), tokens[row, begin + 1:end + 1].to(logits.device),
                                  reduction="sum")
            total_nll += float(nll.double())
            total_tokens += end - begin
    nll_per_token = total_nll / total_tokens
    return PerplexityResult(perplexity=math.exp(nll_per_token), nll_per_token=nll_per_token, tokens=total_tokens,
                            windows=len(final), seconds=time.perf_counter() - start,
                            convention=windows.convention, method=windows.description)
