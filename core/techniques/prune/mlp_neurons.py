"""MLP neuron pruning: shrink the intermediate size of every decoder layer's MLP.

Two layers of API:

* :func:`keep_mlp_neurons` — model surgery with explicit choices (which neurons each layer keeps),
  no calibration; what a distillation step uses to build a narrower student from a teacher.
* ``mlp_prune`` (:func:`apply_mlp_prune`) — the registered step: scores each intermediate neuron k
  by ``‖X_k‖ · ‖W_down[:, k]‖`` on calibration text (block by block, so each block sees the
  already-pruned blocks before it), keeps the same number of top neurons in every layer and
  slices the gate/up rows and the down columns.

The MLP Linears are found by shape: the one whose ``in_features`` is the intermediate size (down)
and the one or two whose ``out_features`` is (gate, up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from core.engine.calibration import InputNormStats, find_blocks, run_blockwise
from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.errors import RecipeError
from core.events import LayerStat
from core.techniques.prune.slicing import (
    STRUCTURED_NOTES,
    check_per_layer,
    keep_columns,
    keep_rows,
    neuron_scores,
    parameter_count,
    removed_share,
    top_neurons,
)


@dataclass
class MLPPruneConfig:
    reduction: float = param(0.25, "Share of MLP neurons removed in every layer (0.25 = a quarter). Every "
                             "layer keeps the same number of neurons.",
                             minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True,
                             label="Share of neurons removed")
    multiple_of: int = param(8, "Round the number of neurons kept to a multiple of this (hardware-friendly "
                             "widths run faster).", minimum=1, label="Keep a multiple of", expert=True)

    def check_model(self, model: nn.Module) -> None:
        """RecipeError unless ``model``'s MLPs are found by shape and the rounded width removes something."""
        intermediate = intermediate_size(model)
        kept_width(intermediate, self.reduction, self.multiple_of)
        blocks_name, blocks = find_blocks(model)
        for i, block in enumerate(blocks):
            mlp_linears(block, f"{blocks_name}.{i}", intermediate)


def kept_width(intermediate: int, reduction: float, multiple_of: int) -> int:
    """How many neurons every layer keeps: ``(1 − reduction) · intermediate`` rounded to ``multiple_of``.

    Raises RecipeError when the rounding would keep every neuron or none.
    """
    kept = int(round((1.0 - reduction) * intermediate / multiple_of)) * multiple_of
    kept = max(kept, multiple_of)
    if kept >= intermediate:
        raise RecipeError(f"reduction {reduction} of {intermediate} MLP neurons, rounded to a multiple of "
                          f"{multiple_of}, removes nothing: raise the reduction or lower multiple_of")
    return kept


def intermediate_size(model: nn.Module) -> int:
    """The model's MLP width from its config; RecipeError if the MLP cannot be found by shape."""
    config = getattr(model, "config", None)
    intermediate = getattr(config, "intermediate_size", None)
    hidden = getattr(config, "hidden_size", None)
    if not isinstance(intermediate, int) or not isinstance(hidden, int):
        raise RecipeError("MLP pruning needs a model config with one integer intermediate_size and hidden_size")
    if intermediate == hidden:
        raise RecipeError("the MLP is as wide as the hidden size, so its layers cannot be told apart by shape")
    return intermediate


def mlp_linears(block: nn.Module, prefix: str, intermediate: int) -> tuple[str, nn.Linear, list[nn.Linear]]:
    """(down name, down Linear, [gate/up Linears]) of one block, found by shape."""
    downs = [(f"{prefix}.{n}", m) for n, m in block.named_modules()
             if isinstance(m, nn.Linear) and m.in_features == intermediate]
    ups = [m for _, m in block.named_modules() if isinstance(m, nn.Linear) and m.out_features == intermediate]
    if len(downs) != 1 or not 1 <= len(ups) <= 2:
        raise RecipeError(f"{prefix}: could not find one MLP down projection (in_features = {intermediate}) "
                          f"and one or two gate/up projections (out_features = {intermediate}) by shape; "
                          "MLP pruning does not support this architecture")
    return downs[0][0], downs[0][1], ups


def slice_mlp(down: nn.Linear, ups: Sequence[nn.Linear], keep: torch.Tensor) -> None:
    """Keep neurons ``keep`` of one MLP: rows of every gate/up projection, columns of the down projection."""
    for up in ups:
        keep_rows(up, keep)
    keep_columns(down, keep)


def keep_mlp_neurons(model: nn.Module, per_layer_index: Sequence) -> int:
    """Narrow every layer's MLP to the given neurons; return the new ``intermediate_size``.

    ``per_layer_index[i]`` lists the intermediate neurons block i keeps (any order, no repeats);
    every block must keep the same number, so the config stays one ``intermediate_size`` that
    plain transformers loads.  The model is changed in place (shapes and config), no data needed:
    e.g. ``keep_mlp_neurons(student, [range(1152)] * 30)`` keeps the first 1152 neurons everywhere.
    Raises ValueError for a wrong number of layers, unequal widths or out-of-range positions.
    """
    intermediate = intermediate_size(model)
    blocks_name, blocks = find_blocks(model)
    indices = check_per_layer(per_layer_index, len(blocks), intermediate, "per_layer_index", "MLP neurons")
    found = [mlp_linears(block, f"{blocks_name}.{i}", intermediate) for i, block in enumerate(blocks)]
    for (_, down, ups), keep in zip(found, indices, strict=True):
        slice_mlp(down, ups, keep)
    model.config.intermediate_size = int(indices[0].numel())
    return model.config.intermediate_size


@register("mlp_prune", title="MLP neuron pruning", family="pruning",
          summary="Remove the least important MLP neurons (activation size × weight size on calibration "
                  "text) in every layer. Really shrinks the model and speeds it up; quality drops, "
                  "distillation can recover some.",
          config=MLPPruneConfig, needs=Needs(calibration_data=True, tasks=("causal-lm",)))
def apply_mlp_prune(model, config: MLPPruneConfig, ctx):
    """Handler: measure down-projection input norms block by block, slice the MLPs, set intermediate_size."""
    config.check_model(model)
    intermediate = intermediate_size(model)
    kept = kept_width(intermediate, config.reduction, config.multiple_of)
    blocks_name, blocks = find_blocks(model)
    found = [mlp_linears(block, f"{blocks_name}.{i}", intermediate) for i, block in enumerate(blocks)]
    downs = {name: (down, ups) for name, down, ups in found}
    before = parameter_count(model)
    windows = ctx.calibration_windows()
    rows: list[dict] = []

    def compress(block):
        for name, linear in block.linears.items():
            _, ups = downs[name]
            scores = neuron_scores(block.stats[name].norms(), linear.weight)
            keep = top_neurons(scores, kept)
            slice_mlp(linear, ups, keep)
            share = removed_share(scores, keep)
            rows.append({"layer": block.name, "neurons_before": intermediate, "neurons_after": kept,
                         "removed_importance": share})
            yield LayerStat(block.name, "removed_importance", share, ctx.step_index)

    yield from run_blockwise(model, windows, make_stats=InputNormStats, compress_block=compress,
                             targets=list(downs), ignore=[], device=ctx.device, stage="MLP pruning",
                             step_index=ctx.step_index)
    model.config.intermediate_size = kept
    after = parameter_count(model)
    return StepReport(
        summary=f"Removed {intermediate - kept} of {intermediate} MLP neurons in each of {len(blocks)} layers: "
                f"{before / 1e6:.2f}M → {after / 1e6:.2f}M parameters.",
        metrics={"parameters_before": before, "parameters_after": after,
                 "parameter_reduction": 1.0 - after / before, "intermediate_size": kept, "layers": len(blocks),
                 "calibration_tokens": int(windows.numel())},
        layers=rows, notes=list(STRUCTURED_NOTES))
