"""Wanda: prune by weight magnitude times input activation norm (Sun et al. 2023).

A weight's score is ``|W_ij| * ‖X_j‖``, where ``‖X_j‖`` is the L2 norm of input feature j over
every calibration token.  Weights are compared within each output row (unstructured) or within
each group of M consecutive inputs (N:M).  No weight is updated: only a mask is applied, so Wanda
is as fast as one calibration pass.  The math is in :func:`wanda_scores` / :func:`wanda_mask`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.calibration import InputNormStats
from core.params import param
from core.registry import Needs, StepReport, register
from core.targets import DEFAULT_IGNORE, DEFAULT_TARGETS
from core.techniques.prune.masks import (
    PATTERN_HELP,
    PATTERNS,
    PRUNE_NOTES,
    check_targets,
    nm_mask,
    parse_pattern,
    prune_blockwise,
    row_topk_mask,
)
from core.techniques.prune.sparse_format import SAVE_FORMAT_HELP, SAVE_FORMATS, apply_save_format


@dataclass
class WandaConfig:
    sparsity: float = param(0.5, "Share of weights set to zero in each row of each targeted layer "
                            "(0.5 = half). Ignored for the 2:4 and 4:8 patterns, which are always 50%.",
                            minimum=0.0, maximum=1.0, exclusive_maximum=True)
    pattern: str = param("unstructured", PATTERN_HELP, choices=PATTERNS)
    targets: list = param(list(DEFAULT_TARGETS), "Layer name patterns to prune (shell globs, or re:regex).")
    ignore: list = param(list(DEFAULT_IGNORE), "Layer name patterns never pruned (the output head by default).")
    save_format: str = param("dense", SAVE_FORMAT_HELP, choices=SAVE_FORMATS)

    def validate(self) -> None:
        """Reject settings that cannot mean anything (RecipeError with the reason)."""
        parse_pattern(self.pattern)
        check_targets(self.targets, self.ignore)


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


@register("wanda_prune", title="Wanda pruning", family="pruning",
          summary="Zero the weights with the smallest |weight| × input size, measured on calibration "
                  "text. Much better than magnitude pruning at the same sparsity and nearly as fast; "
                  "no weight is retrained. Does not shrink a dense file by itself.",
          config=WandaConfig, needs=Needs(calibration_data=True))
def apply_wanda_prune(model, config: WandaConfig, ctx):
    """Handler: measure input norms block by block, mask every target Linear, report sparsity."""
    n, m = parse_pattern(config.pattern)

    def prune_linear(_name, linear, stats: InputNormStats) -> dict:
        linear.weight.mul_(wanda_mask(linear.weight, stats.norms(), config.sparsity, n, m))
        return {}

    rows, achieved = yield from prune_blockwise(
        model, ctx, targets=config.targets, ignore=config.ignore, pattern=config.pattern,
        make_stats=InputNormStats, prune_linear=prune_linear, stage="Wanda pruning")
    what = f"{config.pattern} pattern" if m else "unstructured, per row"
    return apply_save_format(model, config.save_format, StepReport(
        summary=f"Pruned {len(rows)} layers to {achieved:.1%} zeros with Wanda ({what}).",
        metrics={"sparsity": achieved, "layers": len(rows),
                 "calibration_tokens": int(ctx.calibration_windows().numel())},
        layers=rows,
        notes=PRUNE_NOTES[:1] + (PRUNE_NOTES[1:] if m else []) + [
            "Wanda only removes weights; the ones kept are unchanged (no error compensation)."]))
