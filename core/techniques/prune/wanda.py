"""Wanda: prune by weight magnitude times input activation norm (Sun et al. 2023).

A weight's score is ``|W_ij| * ‖X_j‖``, where ``‖X_j‖`` is the L2 norm of input feature j over
every calibration token.  Weights are compared within each output row (unstructured) or within
each group of M consecutive inputs (N:M).  No weight is updated: only a mask is applied, so Wanda
is as fast as one calibration pass.  The math is in :func:`wanda_scores` / :func:`wanda_mask`; the pass
over the blocks that applies it (in memory and streamed) is :func:`prune_wanda_blocks`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import torch

from core.engine.calibration import InputNormStats
from core.engine.registry import Needs, StepReport, register
from core.techniques.prune.data_aware import PRUNE_NOTES, DataPruneConfig, prune_blockwise, schedule_report
from core.techniques.prune.masks import nm_mask, parse_pattern, row_topk_mask
from core.techniques.prune.sparse_format import apply_save_format


@dataclass
class WandaConfig(DataPruneConfig):
    """Wanda's settings: exactly the shared ones (sparsity is dropped per output row)."""


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """``|W| * ‖X_j‖``: weight [out, in] times the per-input-feature norms [in], broadcast over rows."""
    norms = input_norms.to(device=weight.device, dtype=torch.float32).reshape(1, -1)
    return weight.detach().abs().to(torch.float32) * norms


def wanda_mask(weight: torch.Tensor, input_norms: torch.Tensor, sparsity: float, n: int = 0,
               m: int = 0) -> torch.Tensor:
    """Boolean keep-mask by Wanda score: per output row (unstructured, ``sparsity`` dropped per row),
    or keep ``n`` of every ``m`` consecutive inputs when ``m`` is given (``sparsity`` is then ignored)."""
    scores = wanda_scores(weight, input_norms)
    return nm_mask(scores, n, m) if m else row_topk_mask(scores, sparsity)


def prune_wanda_blocks(model, ctx, config: DataPruneConfig) -> Generator[Any, None, tuple[list[dict], float, Any]]:
    """Wanda's pass over the blocks (the handler's and the streamed run's): measure the input norms of each
    block's Linears on the calibration windows and mask every target Linear by :func:`wanda_mask`.  A
    generator of events; returns :func:`prune_blockwise`'s ``(rows, achieved_sparsity, schedule)``."""
    n, m = parse_pattern(config.pattern)

    def prune_linear(_name, linear, stats: InputNormStats, sparsity: float) -> dict:
        linear.weight.mul_(wanda_mask(linear.weight, stats.norms(), sparsity, n, m))
        return {}

    return (yield from prune_blockwise(
        model, ctx, config=config, make_stats=InputNormStats, prune_linear=prune_linear, stage="Wanda pruning"))


@register("wanda_prune", title="Wanda pruning", family="pruning",
          summary="Zero the weights with the smallest |weight| × input size, measured on calibration "
                  "text. Much better than magnitude pruning at the same sparsity and nearly as fast; "
                  "no weight is retrained. Does not shrink a dense file by itself.",
          config=WandaConfig, needs=Needs(calibration_data=True))
def apply_wanda_prune(model, config: WandaConfig, ctx):
    """Handler: measure input norms block by block, mask every target Linear, report sparsity."""
    _n, m = parse_pattern(config.pattern)
    rows, achieved, schedule = yield from prune_wanda_blocks(model, ctx, config)
    schedule_metrics, schedule_notes, schedule_words = schedule_report(config, schedule)
    what = f"{config.pattern} pattern" if m else "unstructured, per row"
    return apply_save_format(model, config.save_format, StepReport(
        summary=f"Pruned {len(rows)} layers to {achieved:.1%} zeros with Wanda ({what}{schedule_words}).",
        metrics={"sparsity": achieved, "layers": len(rows),
                 "calibration_tokens": int(ctx.calibration_windows().numel()), **schedule_metrics},
        layers=rows,
        notes=PRUNE_NOTES[:1] + (PRUNE_NOTES[1:] if m else []) + schedule_notes + [
            "Wanda only removes weights; the ones kept are unchanged (no error compensation)."]))
