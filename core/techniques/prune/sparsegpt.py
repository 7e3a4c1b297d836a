"""SparseGPT: one-shot pruning with error compensation (Frantar & Alistarh, 2023).

For each Linear, with the layer-wise Hessian H = (2/n) Σ x xᵀ of its calibration inputs, the
columns are visited left to right.  Each pruned weight's error is spread over the not-yet-visited
weights of its row using the upper Cholesky factor of H⁻¹ (the Optimal Brain Surgeon update), so
the layer's output ``W X`` changes as little as possible.  The mask is chosen adaptively while
going: per block of columns (unstructured) or per group of M columns (N:M), from the already
updated weights, by the OBS saliency w² / [H⁻¹]_jj².  The math is :func:`sparsegpt_prune`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.engine.calibration import HessianStats, inverse_hessian_cholesky
from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.errors import RecipeError
from core.techniques.prune.data_aware import PRUNE_NOTES, DataPruneConfig, prune_blockwise, schedule_report
from core.techniques.prune.masks import check_nm_width, nm_mask, parse_pattern
from core.techniques.prune.sparse_format import apply_save_format


@dataclass
class SparseGPTConfig(DataPruneConfig):
    """The shared settings plus SparseGPT's column block size and Hessian dampening."""

    block_size: int = param(128, "Columns processed together: the unstructured mask is chosen per block, "
                            "and the error update is applied lazily to later blocks. 128 is the paper's value.",
                            minimum=8, maximum=4096, label="Columns per batch (block size)", expert=True)
    dampening: float = param(0.01, "A small amount added for numerical stability when SparseGPT works out "
                             "how to correct each removed weight: added to the diagonal of the Hessian (the matrix "
                             "of how the layer's inputs vary together), as a share of its mean (0.01 = 1%). The "
                             "default works; raise it only if a run stops because a layer fails to factorise.",
                             minimum=0.0, maximum=1.0, exclusive_minimum=True,
                             label="Stabilizer (dampening)", expert=True)

    def validate(self) -> None:
        """Reject settings that cannot mean anything (RecipeError with the reason)."""
        _, m = parse_pattern(self.pattern)
        if m and self.block_size % m:
            raise RecipeError(f"block_size {self.block_size} must be a multiple of {m} for the "
                              f"{self.pattern} pattern, so groups never straddle two blocks")
        super().validate()


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, n: int = 0, m: int = 0,
                    block_size: int = 128, percdamp: float = 0.01) -> tuple[torch.Tensor, float]:
    """Prune ``weight`` [out, in] with SparseGPT; return (pruned weight, reconstruction error).

    ``hessian`` is (2/n) Σ x xᵀ over the layer's calibration inputs [in, in].  Unstructured: in
    every block of ``block_size`` columns, the ``round(sparsity · rows · block)`` weights with the
    smallest w² / [H⁻¹]_jj² are pruned (one threshold per block over all rows, as the reference
    implementation does).  N:M (``m > 0``): in every group of ``m`` columns each row keeps the
    ``n`` weights with the largest saliency.  The math runs in float32 on the weight's device; the
    result has the weight's dtype.  The error is ‖(W - Ŵ) X‖² / tokens = ½ tr(ΔW H ΔWᵀ), summed
    over outputs and measured with the undamped Hessian.
    """
    rows, columns = weight.shape
    if m:
        check_nm_width(columns, m)
        if block_size % m:
            raise RecipeError(f"block_size {block_size} must be a multiple of {m} for an N:{m} pattern")
    original = weight.detach().to(torch.float32)
    W = original.clone()
    H = hessian.detach().to(device=W.device, dtype=torch.float32).clone()
    dead = torch.diag(H) == 0  # inputs that were always zero: their weights can go for free
    H[dead, dead] = 1
    W[:, dead] = 0
    Hinv = inverse_hessian_cholesky(H, percdamp, "SparseGPT")

    for i1 in range(0, columns, block_size):
        i2 = min(i1 + block_size, columns)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)
        prune1 = torch.zeros_like(W1, dtype=torch.bool)
        if not m:
            saliency = (W1 ** 2 / d.reshape(1, -1) ** 2).flatten()
            count = round(sparsity * saliency.numel())
            if count:
                prune1.view(-1)[torch.argsort(saliency, stable=True)[:count]] = True
        for i in range(i2 - i1):
            if m and i % m == 0:
                saliency = W1[:, i:i + m] ** 2 / d[i:i + m].reshape(1, -1) ** 2
                prune1[:, i:i + m] = ~nm_mask(saliency, n, m)
            w = W1[:, i]
            q = w.masked_fill(prune1[:, i], 0.0)
            err = (w - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)  # OBS update within the block
            Q1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # lazy batch update of the columns after the block

    delta = original - W
    error = 0.5 * float(((delta @ hessian.to(device=W.device, dtype=torch.float32)) * delta).sum())
    return W.to(weight.dtype), error


@register("sparsegpt_prune", title="SparseGPT pruning", family="pruning",
          summary="Zero weights and adjust the remaining ones to make up for them, using second-order "
                  "statistics of calibration text. The best quality of the pruning methods here; slower "
                  "than Wanda (one matrix factorisation per layer). Does not shrink a dense file by itself.",
          config=SparseGPTConfig, needs=Needs(calibration_data=True))
def apply_sparsegpt_prune(model, config: SparseGPTConfig, ctx):
    """Handler: Hessians block by block, SparseGPT on every target Linear, report sparsity and error."""
    n, m = parse_pattern(config.pattern)

    def prune_linear(_name, linear, stats: HessianStats, sparsity: float) -> dict:
        pruned, error = sparsegpt_prune(linear.weight, stats.hessian, sparsity, n, m,
                                        config.block_size, config.dampening)
        linear.weight.copy_(pruned)
        return {"reconstruction_error": error}

    rows, achieved, schedule = yield from prune_blockwise(
        model, ctx, config=config, make_stats=HessianStats, prune_linear=prune_linear, stage="SparseGPT pruning")
    schedule_metrics, schedule_notes, schedule_words = schedule_report(config, schedule)
    what = f"{config.pattern} pattern" if m else "unstructured"
    return apply_save_format(model, config.save_format, StepReport(
        summary=f"Pruned {len(rows)} layers to {achieved:.1%} zeros with SparseGPT ({what}{schedule_words}).",
        metrics={"sparsity": achieved, "layers": len(rows),
                 "reconstruction_error": sum(r["reconstruction_error"] for r in rows),
                 "calibration_tokens": int(ctx.calibration_windows().numel()), **schedule_metrics},
        layers=rows,
        notes=PRUNE_NOTES[:1] + (PRUNE_NOTES[1:] if m else []) + schedule_notes + [
            "SparseGPT changes the weights it keeps to compensate for the pruned ones; "
            "reconstruction_error is each layer's mean squared output change per calibration token "
            "(‖(W − Ŵ)X‖² / tokens), measured after pruning."]))
