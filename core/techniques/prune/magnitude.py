"""Magnitude pruning: zero the weights with the smallest absolute value.

The math lives in :func:`magnitude_mask` / :func:`global_threshold` (pure functions); the handler
only selects layers, applies masks and reports.  Unstructured zeros do not make a dense file
smaller or a CPU faster; the step report says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.engine.params import param
from core.engine.registry import StepReport, register
from core.engine.targets import DEFAULT_IGNORE, DEFAULT_TARGETS, select_linears
from core.events import LayerStat, ProgressMeter
from core.techniques.prune.sparse_format import SAVE_FORMAT_HELP, SAVE_FORMATS, apply_save_format


@dataclass
class MagnitudePruneConfig:
    sparsity: float = param(0.5, "Share of weights set to zero in each targeted layer (0.5 = half).",
                            minimum=0.0, maximum=1.0, exclusive_maximum=True,
                            label="Sparsity")
    scope: str = param("per_layer", "per_layer: every layer loses the same share. global: one threshold "
                       "across all targeted layers, so layers with larger weights keep more.",
                       choices=("per_layer", "global"), label="Scope")
    targets: list[str] = param(list(DEFAULT_TARGETS), "Layer name patterns to prune (shell globs, or re:regex).",
                               label="Layers to prune (patterns)", expert=True)
    ignore: list[str] = param(list(DEFAULT_IGNORE), "Layer name patterns never pruned (the output head by default).",
                              label="Layers to skip (patterns)", expert=True)
    save_format: str = param("dense", SAVE_FORMAT_HELP, choices=SAVE_FORMATS, label="Save format")


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask keeping the ``(1 - sparsity)`` share of entries with the largest |w|.

    Exactly ``round(sparsity * numel)`` entries are dropped; ties are broken by position, so the
    result is deterministic.
    """
    count = round(sparsity * weight.numel())
    mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    if count > 0:
        order = torch.argsort(weight.detach().abs().flatten().float(), stable=True)
        mask[order[:count]] = False
    return mask.view_as(weight)


def global_threshold(weights: list[torch.Tensor], sparsity: float) -> float:
    """The |w| below which ``sparsity`` of all entries across ``weights`` fall."""
    magnitudes = torch.cat([w.detach().abs().flatten().float() for w in weights])
    count = round(sparsity * magnitudes.numel())
    return float(torch.kthvalue(magnitudes, count).values) if count > 0 else -1.0


@register("magnitude_prune", title="Magnitude pruning", family="pruning",
          summary="Zero the smallest weights. Fast and data-free, but loses more quality than "
                  "data-aware pruning at the same sparsity. Does not shrink a dense file by itself.",
          config=MagnitudePruneConfig)
def apply_magnitude_prune(model, config: MagnitudePruneConfig, ctx):
    layers = select_linears(model, config.targets, config.ignore)
    threshold = global_threshold([m.weight for _, m in layers], config.sparsity) if config.scope == "global" else None
    meter = ProgressMeter("Magnitude pruning", len(layers), ctx.step_index)
    rows, zeros, total = [], 0, 0
    for index, (name, module) in enumerate(layers):
        weight = module.weight
        with torch.no_grad():
            mask = (weight.abs() > threshold) if threshold is not None else magnitude_mask(weight, config.sparsity)
            weight.mul_(mask)
        layer_zeros = int(weight.numel() - torch.count_nonzero(weight))
        zeros, total = zeros + layer_zeros, total + weight.numel()
        sparsity = layer_zeros / weight.numel()
        rows.append({"layer": name, "sparsity": sparsity, "params": weight.numel()})
        yield LayerStat(name, "sparsity", sparsity, ctx.step_index)
        event = meter.update(index + 1)
        if event:
            yield event
    achieved = zeros / total if total else 0.0
    return apply_save_format(model, config.save_format, StepReport(
        summary=f"Pruned {len(layers)} layers to {achieved:.1%} zeros by magnitude ({config.scope}).",
        metrics={"sparsity": achieved, "zeroed_weights": zeros, "layers": len(layers)},
        layers=rows,
        notes=["Zeros stored in a dense tensor take as much disk and memory as any other value, and dense "
               "CPU kernels do not skip them: expect no smaller file and no speed-up from this step alone."]))
