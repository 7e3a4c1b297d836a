"""The ``share_layers`` technique and its ``shared`` saved format.

Finds the decoder layers that are most alike (by their weights, or by how little a layer's output
on calibration data changes when it runs with another layer's weights) and lets one layer's
Linear weights serve the others; see :mod:`core.techniques.share.shared` for the math.  Shared
tensors are stored once, so unique parameters and bytes on disk really drop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from core.engine.calibration import HessianStats, capture_block_inputs, find_blocks, run_blockwise
from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.errors import ModelLoadError, RecipeError
from core.events import LayerStat, ProgressMeter
from core.models.formats import SavedFormat, mark_format, read_manifest, register_format
from core.models.model_info import inspect_model
from core.techniques.lowrank.format import rebuild_model, save_factorized
from core.techniques.share.shared import (
    block_linears,
    check_pairs,
    choose_pairs,
    share_block,
    weight_similarity,
)

FORMAT = "shared"


@dataclass
class ShareLayersConfig:
    """Settings of the share_layers step."""

    num_shared: int = param(2, "How many decoder layers give up their own Linear weights and reuse another "
                            "layer's (ignored when pairs are given).", minimum=1, maximum=1024,
                            label="Layers sharing weights")
    similarity: str = param("outputs", "How alike two layers are: outputs (how little a layer's output on "
                            "calibration text changes when it runs with the other layer's weights) or weights "
                            "(cosine similarity of the weights, no data needed).", choices=("outputs", "weights"),
                            label="Similarity measure", expert=True)
    pairs: list = param([], "Explicit source→follower layer index pairs, as [[2, 3]] or '2-3' (layer 3 uses layer "
                        "2's weights). Empty = choose the most alike layers automatically.",
                        label="Layer pairs to share (optional)", expert=True)
    correction_rank: int = param(0, "Rank of a small per-layer low-rank correction added to every shared "
                                 "Linear (0 = none).", minimum=0, maximum=4096,
                                 label="Correction size (rank)")
    correction_fit: str = param("outputs", "How the correction is fitted: outputs (the shared layer's outputs on "
                                "calibration text change least, SVD-LLM whitening) or weights (closest weights, "
                                "no data needed).", choices=("outputs", "weights"),
                                label="How the correction is fitted", expert=True)
    max_distance: int = param(2, "With similarity 'outputs', only layers at most this far apart are compared.",
                              minimum=1, maximum=1024, label="Farthest layers compared", expert=True)
    score_windows: int = param(8, "Calibration windows used to compare layers' outputs.", minimum=1, maximum=4096,
                               label="Text windows for comparing", expert=True)

    def validate(self) -> None:
        """Reject malformed pairs and sharing a layer with itself (RecipeError with the reason)."""
        check_pairs(parse_pairs(self.pairs))


def parse_pairs(pairs: list) -> list[tuple[int, int]]:
    """[[2, 3], "4-5", "6:7"] -> [(2, 3), (4, 5), (6, 7)]; RecipeError for anything else."""
    parsed = []
    for pair in pairs:
        values = pair.replace(":", "-").split("-") if isinstance(pair, str) else pair
        try:
            if isinstance(values, list | tuple) and len(values) == 2 and not any(isinstance(v, bool | float)
                                                                                 for v in values):
                parsed.append((int(values[0]), int(values[1])))
                continue
        except (TypeError, ValueError):
            pass
        raise RecipeError(f"pairs must be source-follower pairs of layer indices like [2, 3] or '2-3', got {pair!r}")
    return parsed


def _run(block, inputs, kwargs_list):
    with torch.no_grad():
        outs = [block(x, **kw) for x, kw in zip(inputs, kwargs_list, strict=True)]
    return [o[0] if isinstance(o, tuple | list) else o for o in outs]


def _output_scores(model, blocks, windows, max_distance, step_index):
    """Score (source, follower) = −‖B_f with source weights (x_f) − B_f(x_f)‖² / ‖B_f(x_f) − x_f‖²."""
    with torch.no_grad():
        inputs, kwargs_list = capture_block_inputs(model, blocks, windows, next(model.parameters()).device)
    scores: dict[tuple[int, int], float] = {}
    meter = ProgressMeter("Comparing layers", len(blocks), step_index)
    for follower, block in enumerate(blocks):
        outs = _run(block, inputs, kwargs_list)
        update = sum(float((o - x).pow(2).sum()) for o, x in zip(outs, inputs, strict=True)) or 1.0
        for source in range(max(0, follower - max_distance), min(len(blocks), follower + max_distance + 1)):
            if source == follower:
                continue
            trial = copy.deepcopy(block)
            for name, linear in block_linears(trial).items():
                linear.weight = block_linears(blocks[source])[name].weight
            moved = _run(trial, inputs, kwargs_list)
            scores[(source, follower)] = -sum(float((a - b).pow(2).sum()) for a, b in zip(moved, outs, strict=True)) / update
        inputs = outs
        event = meter.update(follower + 1)
        if event:
            yield event
    return scores


@register("share_layers", title="Layer sharing", family="sharing",
          summary="Let one decoder layer's weights serve several layers (optionally with a small per-layer "
                  "low-rank correction). Shared tensors are stored once, so the saved model really shrinks.",
          config=ShareLayersConfig, needs=Needs(calibration_data=True, tasks=("causal-lm",)))
def apply_share_layers(model, config: ShareLayersConfig, ctx):
    """Handler: score layer pairs, share the chosen ones, report unique parameters before and after."""
    blocks_name, blocks = find_blocks(model)
    if config.pairs:
        pairs = parse_pairs(config.pairs)
        check_pairs(pairs, len(blocks))
    else:
        if config.num_shared >= len(blocks):
            raise RecipeError(f"num_shared = {config.num_shared} but the model has {len(blocks)} layers: at least "
                              "one layer must keep its own weights")
        if config.similarity == "weights":
            scores = {(s, f): weight_similarity(blocks[s], blocks[f])
                      for s in range(len(blocks)) for f in range(len(blocks)) if s != f}
        else:
            windows = ctx.calibration_windows()[:config.score_windows]
            scores = yield from _output_scores(model, blocks, windows, config.max_distance, ctx.step_index)
        pairs = choose_pairs(scores, config.num_shared)
    before = inspect_model(model, with_layers=False).parameters
    rows = []

    def share(source: int, follower: int, hessians=None):
        changes = share_block(blocks[source], blocks[follower], config.correction_rank, hessians=hessians)
        change = sum(changes.values()) / len(changes)
        rows.append({"layer": f"{blocks_name}.{follower}", "source": f"{blocks_name}.{source}",
                     "relative_weight_change": change})
        yield LayerStat(f"{blocks_name}.{follower}", "shared_with", float(source), ctx.step_index)
        yield LayerStat(f"{blocks_name}.{follower}", "relative_weight_change", change, ctx.step_index)

    if config.correction_rank > 0 and config.correction_fit == "outputs":
        # Block by block, so each follower's correction is fitted to the inputs it really sees
        # (the outputs of the already-shared layers before it).
        source_of = {f: s for s, f in pairs}

        def compress(block):
            prefix = block.name + "."
            hessians = {name[len(prefix):]: stats.hessian for name, stats in block.stats.items()}
            yield from share(source_of[block.index], block.index, hessians)

        yield from run_blockwise(model, ctx.calibration_windows(), make_stats=HessianStats, compress_block=compress,
                                 targets=[f"{blocks_name}.{f}.*" for f in source_of], device=ctx.device,
                                 stage="Fitting corrections", step_index=ctx.step_index)
    else:
        for source, follower in pairs:
            yield from share(source, follower)
    mark_format(model, FORMAT, blocks=blocks_name, pairs=[list(p) for p in pairs],
                correction_rank=config.correction_rank, dtype=str(next(model.parameters()).dtype))
    after = inspect_model(model, with_layers=False).parameters
    return StepReport(
        summary=f"{len(pairs)} layers now reuse another layer's weights: {before:,} → {after:,} unique parameters "
                f"({1 - after / before:.1%} fewer).",
        metrics={"unique_params_before": before, "unique_params_after": after, "reduction": 1 - after / before,
                 "shared_layers": len(pairs)},
        layers=rows,
        notes=["Shared tensors are stored once in the saved folder ('shared' format): it loads with this app, "
               "not with plain transformers.",
               "relative_weight_change is ‖W_own − W_used‖ / ‖W_own‖ per Linear, averaged over the layer"
               + (" (after the correction)." if config.correction_rank else ".")])


def _load_shared(folder: Path, task: str):
    """Rebuild the model from config, re-share the saved pairs, then load the weights strictly."""
    manifest = read_manifest(Path(folder)) or {}
    pairs, blocks_name = manifest.get("pairs"), manifest.get("blocks")
    if not isinstance(pairs, list) or not blocks_name:
        raise ModelLoadError(f"{folder} is marked 'shared' but its manifest lists no layer pairs")

    def reshare(model):
        blocks = model.get_submodule(blocks_name)
        for source, follower in pairs:
            share_block(blocks[source], blocks[follower], int(manifest.get("correction_rank", 0)), fit=False)

    model = rebuild_model(folder, task, {}, manifest.get("dtype", "float32"), prepare=reshare)
    mark_format(model, FORMAT, **{k: manifest[k] for k in ("blocks", "pairs", "correction_rank", "dtype") if k in manifest})
    return model


register_format(SavedFormat(
    name=FORMAT,
    description="Decoder layers sharing one set of Linear weights (stored once), with optional per-layer "
                "low-rank corrections. Loads with LLM Compression Studio, not with plain transformers.",
    save=save_factorized, load=_load_shared, plain_transformers=False))
