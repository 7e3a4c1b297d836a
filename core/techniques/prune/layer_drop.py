"""Whole decoder layer removal: :func:`drop_blocks` (explicit choice) and ``layer_drop`` (by block influence).

* :func:`drop_blocks` — remove the blocks at given indices, renumber the rest (``layer_idx`` for
  the KV cache) and fix the config (``num_hidden_layers``, ``layer_types``); no data needed, what a
  distillation step uses to build a shallower student from a teacher.
* :func:`measure_block_influence` — ShortGPT's Block Influence (Men et al. 2024),
  ``1 − mean cos(h_in, h_out)`` per block over the calibration tokens.
* ``layer_drop`` (:func:`apply_layer_drop`) — the registered step: measure influence once on the
  original model, drop the least influential blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from core.engine.calibration import find_blocks, run_blockwise
from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.errors import RecipeError
from core.events import LayerStat
from core.techniques.prune.slicing import STRUCTURED_NOTES, parameter_count


@dataclass
class LayerDropConfig:
    layers_to_drop: int = param(1, "How many whole decoder layers to remove (those that change the hidden "
                                "state least on calibration text).", minimum=1, label="Layers to remove")

    def check_model(self, model: nn.Module) -> None:
        """RecipeError unless at least one layer of ``model`` would remain."""
        count = len(find_blocks(model)[1])
        if self.layers_to_drop >= count:
            raise RecipeError(f"layers_to_drop = {self.layers_to_drop} would remove every layer: this model "
                              f"has {count}; drop at most {count - 1}")


def block_influence(inputs: torch.Tensor, outputs: torch.Tensor) -> tuple[float, int]:
    """(sum of 1 − cos(h_in, h_out) over tokens, token count) for hidden states [..., hidden]."""
    a = inputs.reshape(-1, inputs.shape[-1]).to(torch.float32)
    b = outputs.reshape(-1, outputs.shape[-1]).to(torch.float32)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return float((1.0 - cos).sum()), a.shape[0]


def drop_blocks(model: nn.Module, drop: Sequence[int]) -> list[int]:
    """Remove the blocks at indices ``drop`` in place, renumber the rest and fix the config.

    Returns the original indices of the blocks kept, in order.  Raises ValueError when an index is
    out of range or every block would go (a model needs at least one layer).
    """
    blocks_name, blocks = find_blocks(model)
    drop_set = {int(i) for i in drop}
    if any(not 0 <= i < len(blocks) for i in drop_set):
        raise ValueError(f"layer indices must lie in [0, {len(blocks) - 1}], got {sorted(drop_set)}")
    keep = [i for i in range(len(blocks)) if i not in drop_set]
    if not keep:
        raise ValueError(f"dropping {sorted(drop_set)} would remove every one of the {len(blocks)} layers")
    parent_name, _, attribute = blocks_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, nn.ModuleList([blocks[i] for i in keep]))
    for new_index, old_index in enumerate(keep):
        for module in blocks[old_index].modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    config = getattr(model, "config", None)
    if config is not None:
        if hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = len(keep)
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, list | tuple) and len(layer_types) == len(blocks):
            config.layer_types = [layer_types[i] for i in keep]
    return keep


def measure_block_influence(model: nn.Module, windows: torch.Tensor, step_index: int | None = None):
    """Generator: yields a ``LayerStat(block, "block_influence")`` per block and progress; returns the list.

    Runs the calibration ``windows`` [n, seq] through the blocks one after another with the shared
    calibration engine (the original model, nothing changed) and measures each block's mean
    ``1 − cos(h_in, h_out)`` over tokens.
    """
    influence: list[float] = []

    def observe(block, inputs, outputs):
        total, tokens = 0.0, 0
        for x, y in zip(inputs, outputs, strict=True):
            part, n = block_influence(x, y)
            total, tokens = total + part, tokens + n
        influence.append(total / tokens)
        yield LayerStat(block.name, "block_influence", influence[-1], step_index)

    yield from run_blockwise(model, windows, stage="Measuring block influence", step_index=step_index,
                             observe_block=observe)
    return influence


@register("layer_drop", title="Layer dropping", family="pruning",
          summary="Remove whole decoder layers that change the hidden state least on calibration text "
                  "(ShortGPT's Block Influence). Big, real savings in size and speed; quality drops "
                  "quickly beyond a few layers, distillation can recover some.",
          config=LayerDropConfig, needs=Needs(calibration_data=True, tasks=("causal-lm",)))
def apply_layer_drop(model, config: LayerDropConfig, ctx):
    """Handler: measure each block's influence on the calibration windows, drop the lowest, renumber."""
    config.check_model(model)
    blocks_name, blocks = find_blocks(model)
    count = len(blocks)
    before = parameter_count(model)
    windows = ctx.calibration_windows()
    influence = yield from measure_block_influence(model, windows, ctx.step_index)
    order = sorted(range(count), key=lambda i: (influence[i], i))
    drop = sorted(order[:config.layers_to_drop])
    keep = drop_blocks(model, drop)
    after = parameter_count(model)
    rows = [{"layer": f"{blocks_name}.{i}", "block_influence": influence[i], "dropped": i in drop,
             "new_index": keep.index(i) if i in keep else None} for i in range(count)]
    return StepReport(
        summary=f"Dropped {len(drop)} of {count} layers ({', '.join(map(str, drop))}): "
                f"{before / 1e6:.2f}M → {after / 1e6:.2f}M parameters.",
        metrics={"parameters_before": before, "parameters_after": after,
                 "parameter_reduction": 1.0 - after / before, "layers_before": count, "layers_after": len(keep),
                 "calibration_tokens": int(windows.numel())},
        layers=rows,
        notes=list(STRUCTURED_NOTES) + [
            "Block influence is measured once on the original model (ShortGPT); layers are not re-ranked "
            "after each removal."])
