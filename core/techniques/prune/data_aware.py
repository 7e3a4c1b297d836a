"""What the calibration-driven pruning steps (Wanda, SparseGPT) share: config, schedule, block loop.

* :class:`DataPruneConfig` — the common settings (sparsity, pattern, per-block schedule, layers,
  save format); each method's config extends it.
* :func:`block_outlier_ratios` — OWL's first pass: the shared block-by-block engine runs the
  calibration windows through the (unchanged) model, folding each target Linear's inputs into
  running ‖X_j‖ statistics, and records each block's outlier ratio (:mod:`owl`).
* :func:`block_sparsities` — per-block sparsity: the target everywhere (``uniform``) or OWL's
  outlier-weighted schedule, whose mean over blocks is the target.
* :func:`prune_blockwise` — the second (pruning) pass every handler runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.engine.calibration import InputNormStats, run_blockwise
from core.engine.params import param
from core.engine.targets import DEFAULT_IGNORE, DEFAULT_TARGETS, check_targets, select_linears
from core.errors import RecipeError
from core.events import LayerStat
from core.techniques.prune.masks import PATTERN_HELP, PATTERNS, check_nm_width, parse_pattern, zero_share
from core.techniques.prune.owl import DEFAULT_LAMBDA, DEFAULT_M, outlier_ratio, owl_layer_sparsities
from core.techniques.prune.sparse_format import SAVE_FORMAT_HELP, SAVE_FORMATS

SCHEDULES = ("uniform", "owl")
SCHEDULE_HELP = ("uniform: every decoder block is pruned to the same sparsity. owl: blocks whose activations "
                 "have more outliers are pruned less and the others more, with the same overall sparsity "
                 "(OWL, Yin et al. 2024; helps most at high sparsity, costs one extra calibration pass).")

PRUNE_NOTES = [
    "Zeros stored in a dense tensor take as much disk and memory as any other value, and dense CPU "
    "kernels do not skip them: expect no smaller file and no speed-up from this step alone.",
    "2:4 sparsity can run faster only on GPUs with sparse tensor cores (NVIDIA Ampere or newer) "
    "through a sparse kernel; this app saves it as a dense tensor.",
]


@dataclass
class DataPruneConfig:
    """Settings shared by Wanda and SparseGPT (extended by each method's config)."""

    sparsity: float = param(0.5, "Share of weights set to zero in the targeted layers (0.5 = half). "
                            "Ignored for the 2:4 and 4:8 patterns, which are always 50%.",
                            minimum=0.0, maximum=1.0, exclusive_maximum=True,
                            label="Sparsity")
    pattern: str = param("unstructured", PATTERN_HELP, choices=PATTERNS, label="Pattern")
    schedule: str = param("uniform", SCHEDULE_HELP, choices=SCHEDULES, label="Sparsity per block")
    owl_lambda: float = param(DEFAULT_LAMBDA, "OWL only: how far a block's sparsity may move from the target "
                              "(0.08 = ±8 points, the paper's value).", minimum=0.0, maximum=0.5,
                              label="OWL: largest change per block", expert=True)
    owl_m: float = param(DEFAULT_M, "OWL only: a score counts as an outlier above this many times its "
                         "block's mean (5 in the paper).", minimum=1.0, maximum=100.0,
                         label="OWL: outlier threshold", expert=True)
    targets: list[str] = param(list(DEFAULT_TARGETS), "Layer name patterns to prune (shell globs, or re:regex).",
                               label="Layers to prune (patterns)", expert=True)
    ignore: list[str] = param(list(DEFAULT_IGNORE), "Layer name patterns never pruned (the output head by default).",
                              label="Layers to skip (patterns)", expert=True)
    save_format: str = param("dense", SAVE_FORMAT_HELP, choices=SAVE_FORMATS, label="Save format")

    def validate(self) -> None:
        """Reject settings that cannot mean anything (RecipeError with the reason)."""
        n, m = parse_pattern(self.pattern)
        if m and self.schedule != "uniform":
            raise RecipeError(f"the {self.pattern} pattern fixes the sparsity at {1 - n / m:.0%} "
                              f"in every layer, so the '{self.schedule}' schedule has nothing to vary: use "
                              "schedule 'uniform' with a pattern, or the 'unstructured' pattern with OWL")
        if self.schedule == "owl" and self.sparsity == 0:
            raise RecipeError("the OWL schedule needs a sparsity above 0 to distribute across layers")
        check_targets(self.targets, self.ignore)

    def check_model(self, model) -> None:
        """RecipeError when the targets match no Linear of ``model`` or a width does not fit the N:M pattern."""
        _, m = parse_pattern(self.pattern)
        for name, linear in select_linears(model, self.targets, self.ignore):
            check_nm_width(linear.in_features, m, name)


def block_outlier_ratios(model, ctx, *, targets: list, ignore: list, m: float = DEFAULT_M):
    """Generator (OWL's first pass): yields a ``LayerStat(block, "outlier_ratio")`` per block; returns
    ``{block name: outlier ratio}``.

    Uses the shared block-by-block engine with running input-norm statistics only; the model is
    not changed (the blocks see the original model's hidden states, as in the reference code).
    """
    ratios: dict[str, float] = {}

    def measure(block):
        names = list(block.linears)
        ratio = outlier_ratio([block.linears[n].weight for n in names], [block.stats[n].norms() for n in names], m)
        ratios[block.name] = ratio
        yield LayerStat(block.name, "outlier_ratio", ratio, ctx.step_index)

    yield from run_blockwise(model, ctx.calibration_windows(), make_stats=InputNormStats, compress_block=measure,
                             targets=targets, ignore=ignore, device=ctx.device, stage="OWL: measuring outliers",
                             step_index=ctx.step_index)
    return ratios


def block_sparsities(model, ctx, config: DataPruneConfig):
    """Generator: ``{block name: sparsity}`` for the config's schedule (an OWL first pass when asked).

    Yields ``LayerStat(block, "outlier_ratio")`` (OWL only) and ``LayerStat(block, "target_sparsity")``.
    """
    if config.schedule == "uniform":
        return None
    ratios = yield from block_outlier_ratios(model, ctx, targets=config.targets, ignore=config.ignore,
                                             m=config.owl_m)
    names = list(ratios)
    values = owl_layer_sparsities([ratios[n] for n in names], config.sparsity, config.owl_lambda)
    schedule = dict(zip(names, values, strict=True))
    for name in names:
        yield LayerStat(name, "target_sparsity", schedule[name], ctx.step_index)
    return {"sparsity": schedule, "outlier_ratio": ratios}


def prune_blockwise(model, ctx, *, config: DataPruneConfig, make_stats, prune_linear, stage: str):
    """Run ``prune_linear(name, linear, stats, sparsity) -> dict`` on every target Linear, block by block.

    A generator (the handlers' shared body): checks N:M widths before any calibration work, works
    out each block's sparsity (:func:`block_sparsities`), runs :func:`core.engine.calibration.run_blockwise`
    on the recipe's calibration windows, yields a ``LayerStat(layer, "sparsity")`` per Linear plus
    any figures ``prune_linear`` returns, and returns ``(rows, achieved_sparsity, schedule)`` where
    ``schedule`` is None (uniform) or ``{"sparsity": {block: s}, "outlier_ratio": {block: r}}``.
    """
    config.check_model(model)
    schedule = yield from block_sparsities(model, ctx, config)
    per_block = schedule["sparsity"] if schedule else {}
    rows: list[dict] = []

    def compress(block):
        sparsity = per_block.get(block.name, config.sparsity)
        for name, linear in block.linears.items():
            with torch.no_grad():
                extra = prune_linear(name, linear, block.stats[name], sparsity)
            share = zero_share(linear.weight)
            rows.append({"layer": name, "block": block.name, "target_sparsity": sparsity, "sparsity": share,
                         "params": linear.weight.numel(), **extra})
            yield LayerStat(name, "sparsity", share, ctx.step_index)
            for key, value in extra.items():
                yield LayerStat(name, key, float(value), ctx.step_index)

    yield from run_blockwise(model, ctx.calibration_windows(), make_stats=make_stats, compress_block=compress,
                             targets=config.targets, ignore=config.ignore, device=ctx.device, stage=stage,
                             step_index=ctx.step_index)
    total = sum(r["params"] for r in rows)
    zeros = sum(r["sparsity"] * r["params"] for r in rows)
    return rows, (zeros / total if total else 0.0), schedule


def schedule_report(config: DataPruneConfig, schedule) -> tuple[dict, list[str], str]:
    """(metrics, notes, summary words) describing the schedule for a StepReport."""
    if not schedule:
        return {"schedule": "uniform"}, [], ""
    values = list(schedule["sparsity"].values())
    metrics = {"schedule": "owl", "owl_lambda": config.owl_lambda, "owl_m": config.owl_m,
               "block_sparsity_min": min(values), "block_sparsity_max": max(values)}
    notes = [f"OWL schedule: each block's sparsity from its outlier ratio (scores above {config.owl_m:g}× the "
             f"block mean), between {min(values):.1%} and {max(values):.1%}, averaging the {config.sparsity:.0%} "
             "target; measured in one extra calibration pass on the unpruned model."]
    return metrics, notes, f", OWL schedule {min(values):.0%}–{max(values):.0%} per block"
