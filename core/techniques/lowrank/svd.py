"""The ``svd_lowrank`` technique: replace target Linears by two smaller ones, to a global parameter target.

Methods (the math is in :mod:`core.techniques.lowrank.factorized`):

- ``plain``: truncated SVD of each weight, no data;
- ``activation_aware``: SVD-LLM whitening by the Cholesky factor of the layer's XXᵀ;
- ``rom``: reduced-order model, W ≈ V_k (V_kᵀ W) with V_k the top principal directions of Y = W X.

The data-aware methods run on the shared block-by-block engine, so every block's statistics come
from the outputs of the already-factorized blocks before it.  Ranks come from
:mod:`core.techniques.lowrank.allocate` (or a fixed ``rank``); a layer whose rank would reach
m·n/(m+n) is left dense and the report says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from core.engine.calibration import HessianStats, run_blockwise
from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.engine.targets import DEFAULT_IGNORE, DEFAULT_TARGETS, select_linears
from core.errors import RecipeError
from core.events import LayerStat, ProgressMeter
from core.models.module_swap import replace_module
from core.techniques.lowrank.allocate import ALLOCATIONS, allocate_ranks, layer_params
from core.techniques.lowrank.factorized import (
    FactorizedLinear,
    break_even_rank,
    output_covariance,
    output_error,
    rom_factors,
    svd_factors,
    whitened_svd_factors,
)
from core.techniques.lowrank.format import factorized_ranks, mark_factorized, merge_to_dense
from core.techniques.lowrank.sensitivity import measure_sensitivity

METHODS = ("plain", "activation_aware", "rom")


@dataclass
class SVDLowRankConfig:
    """Settings of the svd_lowrank step."""

    method: str = param("activation_aware", "plain: truncated SVD of the weights (no data). activation_aware: "
                        "whiten by calibration inputs first (SVD-LLM), so the layer's output changes least. "
                        "rom: project each layer on the principal directions of its outputs on calibration data.",
                        choices=METHODS, label="Method")
    target_reduction: float = param(0.2, "Share of the targeted Linears' parameters to remove (0.2 = 20% fewer).",
                                    minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True,
                                    label="Share removed")
    allocation: str = param("uniform", "How ranks are shared out: uniform (every layer loses the same share), "
                            "energy (keep the singular values with most energy per weight), sensitivity "
                            "(measure how much each layer hurts the loss when truncated; sensitive layers keep more).",
                            choices=ALLOCATIONS, label="How ranks are shared out", expert=True)
    rank: int | None = param(None, "A fixed rank for every layer instead of target_reduction (empty = use the target).",
                             minimum=1, label="Fixed rank (optional)", expert=True)
    dampening: float = param(0.01, "activation_aware only: a small amount added for numerical stability "
                             "before the statistics of the layer's inputs (XXᵀ) are factorised (Cholesky): added "
                             "to their diagonal as a share of its mean (0.01 = 1%). Raise it only if a layer fails "
                             "to factorise.", minimum=0.0, maximum=1.0, exclusive_minimum=True,
                             label="Stabilizer (dampening)", expert=True)
    merge_to_dense: bool = param(False, "Multiply the factors back into dense Linears at the end, so plain "
                                 "transformers loads the result. The merged model is NOT smaller than the original.",
                                 label="Merge back into ordinary layers")
    targets: list[str] = param(list(DEFAULT_TARGETS), "Layer name patterns to factorize (shell globs, or re:regex).",
                               label="Layers to factorize (patterns)", expert=True)
    ignore: list[str] = param(list(DEFAULT_IGNORE), "Layer name patterns never factorized (the output head by default).",
                              label="Layers to skip (patterns)", expert=True)

    def validate(self) -> None:
        """Reject settings that cannot mean anything (RecipeError with the reason)."""
        if not 0 < self.target_reduction < 1:
            raise RecipeError(f"target_reduction must be strictly between 0 and 1 (got {self.target_reduction}): "
                              "0 removes nothing and 1 would remove every weight")
        if self.rank is not None and self.rank < 1:
            raise RecipeError(f"rank must be at least 1 (got {self.rank})")
        if not self.targets:
            raise RecipeError("targets is empty: give at least one layer name pattern, e.g. '*'")


def _choose_ranks(model, config, linears, ctx):
    shapes = {name: (lin.out_features, lin.in_features) for name, lin in linears.items()}
    if config.rank is not None:
        return {n: (config.rank if config.rank < break_even_rank(m, k) else None) for n, (m, k) in shapes.items()}
    if config.allocation == "energy":
        spectra = {n: torch.linalg.svdvals(lin.weight.detach().float()) for n, lin in linears.items()}
        return allocate_ranks(shapes, config.target_reduction, "energy", spectra=spectra)
    if config.allocation == "sensitivity":
        probe = allocate_ranks(shapes, config.target_reduction, "uniform")
        sensitivity = measure_sensitivity(model, linears, probe, ctx.calibration_windows())
        return allocate_ranks(shapes, config.target_reduction, "sensitivity", sensitivity=sensitivity)
    return allocate_ranks(shapes, config.target_reduction, "uniform")


def _factorize(name, linear, rank, method, stats, damp):
    """Factor one Linear; return (module, relative output error or None)."""
    weight = linear.weight
    if method == "plain":
        down, up = svd_factors(weight, rank)
    elif method == "activation_aware":
        down, up = whitened_svd_factors(weight, stats.hessian, rank, damp)
    else:
        down, up = rom_factors(weight, output_covariance(weight, stats.hessian), rank)
    error = None
    if stats is not None:
        base = output_error(weight, torch.zeros_like(weight), stats.hessian)
        error = output_error(weight, up @ down, stats.hessian) / base if base > 0 else 0.0
    return FactorizedLinear.from_factors(linear, down, up), error


@register("svd_lowrank", title="Low-rank factorization (SVD)", family="low-rank",
          summary="Replace each Linear by two thinner ones (W ≈ B·A) to remove a share of the parameters. "
                  "Plain SVD needs no data; activation-aware (SVD-LLM) and reduced-order modelling use "
                  "calibration text and keep much more quality. Saves a genuinely smaller model.",
          config=SVDLowRankConfig, needs=Needs(calibration_data=True, tasks=("causal-lm",)))
def apply_svd_lowrank(model, config: SVDLowRankConfig, ctx):
    """Handler: choose ranks, factorize every target Linear (block by block for data methods), report."""
    already = factorized_ranks(model)
    ignore = list(config.ignore) + [f"{n}.{part}" for n in already for part in ("down", "up")]
    linears = dict(select_linears(model, config.targets, ignore))
    ranks = _choose_ranks(model, config, linears, ctx)
    rows: list[dict] = []
    stage = f"Low-rank ({config.method})"

    def handle(name, linear, stats):
        rank, (m, n) = ranks[name], (linear.out_features, linear.in_features)
        row = {"layer": name, "rank": rank if rank is not None else min(m, n), "factorized": rank is not None,
               "break_even_rank": round(break_even_rank(m, n), 1), "params_before": m * n,
               "params_after": layer_params(rank, m, n), "seconds": 0.0}
        started = time.perf_counter()
        if rank is not None:
            with torch.no_grad():
                module, error = _factorize(name, linear, rank, config.method, stats, config.dampening)
            replace_module(model, name, module)
            if error is not None:
                row["relative_output_error"] = error
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        yield LayerStat(name, "rank", float(row["rank"]), ctx.step_index)
        yield LayerStat(name, "seconds", row["seconds"], ctx.step_index)
        if "relative_output_error" in row:
            yield LayerStat(name, "relative_output_error", row["relative_output_error"], ctx.step_index)

    if config.method == "plain":
        meter = ProgressMeter(stage, len(linears), ctx.step_index)
        for index, (name, linear) in enumerate(linears.items()):
            yield from handle(name, linear, None)
            event = meter.update(index + 1)
            if event:
                yield event
    else:
        def compress(block):
            for name, linear in block.linears.items():
                yield from handle(name, linear, block.stats[name])

        yield from run_blockwise(model, ctx.calibration_windows(), make_stats=HessianStats, compress_block=compress,
                                 targets=config.targets, ignore=ignore, device=ctx.device, stage=stage,
                                 step_index=ctx.step_index)
    return _report(model, config, rows)


def _report(model, config, rows) -> StepReport:
    before = sum(r["params_before"] for r in rows)
    after = sum(r["params_after"] for r in rows)
    done = [r for r in rows if r["factorized"]]
    kept = [r for r in rows if not r["factorized"]]
    seconds = sum(r["seconds"] for r in rows)
    notes = [f"{r['layer']}: not factorized: rank ≥ mn/(m+n) = {r['break_even_rank']}, so two factors would "
             "not be smaller than the dense weight" for r in kept]
    metrics = {"params_before": before, "params_after": after, "reduction": 1 - after / before if before else 0.0,
               "layers_factorized": len(done), "layers_kept_dense": len(kept), "factorize_seconds": seconds,
               "seconds_per_layer": seconds / len(rows) if rows else 0.0}
    errors = [r["relative_output_error"] for r in done if "relative_output_error" in r]
    if errors:
        metrics["mean_relative_output_error"] = sum(errors) / len(errors)
        notes.append("relative_output_error is ‖(W − Ŵ)X‖² / ‖WX‖² on the calibration inputs each layer saw.")
    if config.merge_to_dense:
        merge_to_dense(model)
        metrics["params_after_merge"] = before
        notes.append("Merged to dense: the factors were multiplied back into full Linears so plain transformers "
                     "loads the result. The merged model is NOT smaller than the original; only the low-rank "
                     "approximation (and its quality loss) remains.")
    else:
        mark_factorized(model)
        notes.append("Saved in the 'factorized' format: loads with this app (same logits), not with plain "
                     "transformers; set merge_to_dense for a plain (but not smaller) export.")
    if config.method != "plain":
        notes.append("seconds per layer counts the factorization only; calibration passes are in the step time.")
    summary = (f"Factorized {len(done)} of {len(rows)} layers ({config.method}, {config.allocation} ranks): "
               f"{before:,} → {after:,} parameters in the targeted Linears ({metrics['reduction']:.1%} fewer)"
               + (", then merged back to dense (no smaller)." if config.merge_to_dense else "."))
    return StepReport(summary=summary, metrics=metrics, layers=rows, notes=notes)

