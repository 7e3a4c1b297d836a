"""Structured pruning: remove MLP neurons, attention heads or decoder layers, so the model really shrinks.

Unlike the mask-based methods, these steps change tensor shapes: the saved file is smaller and
every forward pass does less work, and the result is still a plain transformers model (only
sizes in its config change: ``intermediate_size``, the head counts or ``num_hidden_layers``).

* ``mlp_prune``: score each intermediate MLP neuron k by ``‖X_k‖ · ‖W_down[:, k]‖`` (Wanda's
  statistic, per neuron: how large its activation is on calibration text times how much the
  down projection amplifies it), keep the same number of top-scoring neurons in every layer and
  slice the gate/up rows and the down columns.  The MLP Linears are found by shape: the one whose
  ``in_features`` is the intermediate size (down) and those whose ``out_features`` is (gate, up).
* ``attention_prune``: the same statistic on o_proj's inputs, summed over each key/value group
  (one key/value head and the query heads sharing it); the lowest groups are removed in every
  layer, so ``num_attention_heads`` and ``num_key_value_heads`` stay single integers and
  ``head_dim`` is written into the config.  Needs separate q_proj/k_proj/v_proj/o_proj Linears.
* ``layer_drop``: ShortGPT's Block Influence (Men et al. 2024), ``1 − mean cos(h_in, h_out)``
  per block over the calibration tokens; the least influential blocks are removed and the rest
  renumbered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.calibration import InputNormStats, capture_block_inputs, find_blocks, run_blockwise
from core.errors import RecipeError
from core.events import LayerStat, ProgressMeter
from core.params import param
from core.registry import Needs, StepReport, register

STRUCTURED_NOTES = [
    "Structured pruning removes whole rows, columns or layers: the saved file is smaller and decoding "
    "is faster on any hardware, and plain transformers loads the result (only the config changed).",
    "Quality drops more than with unstructured pruning at the same share of parameters removed; a "
    "distillation step afterwards (the original model as teacher) can recover much of it.",
]


def parameter_count(model: nn.Module) -> int:
    """Unique parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ------------------------------------------------------------------------------------ MLP neurons
@dataclass
class MLPPruneConfig:
    reduction: float = param(0.25, "Share of MLP neurons removed in every layer (0.25 = a quarter). Every "
                             "layer keeps the same number of neurons.",
                             minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True)
    multiple_of: int = param(8, "Round the number of neurons kept to a multiple of this (hardware-friendly "
                             "widths run faster).", minimum=1)


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


def neuron_scores(input_norms: torch.Tensor, down_weight: torch.Tensor) -> torch.Tensor:
    """Importance of each intermediate neuron k: ``‖X_k‖ · ‖W_down[:, k]‖`` (shape [intermediate])."""
    column_norms = down_weight.detach().to(torch.float32).norm(dim=0)
    return input_norms.to(device=column_norms.device, dtype=torch.float32) * column_norms


def top_neurons(scores: torch.Tensor, kept: int) -> torch.Tensor:
    """Indices of the ``kept`` highest scores, in ascending index order (ties broken by position)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return torch.sort(order[:kept]).values


def _mlp_linears(block: nn.Module, prefix: str, intermediate: int) -> tuple[str, nn.Linear, list[nn.Linear]]:
    """(down name, down Linear, [gate/up Linears]) of one block, found by shape."""
    downs = [(f"{prefix}.{n}", m) for n, m in block.named_modules()
             if isinstance(m, nn.Linear) and m.in_features == intermediate]
    ups = [m for _, m in block.named_modules() if isinstance(m, nn.Linear) and m.out_features == intermediate]
    if len(downs) != 1 or not 1 <= len(ups) <= 2:
        raise RecipeError(f"{prefix}: could not find one MLP down projection (in_features = {intermediate}) "
                          f"and one or two gate/up projections (out_features = {intermediate}) by shape; "
                          "MLP pruning does not support this architecture")
    return downs[0][0], downs[0][1], ups


def _keep_rows(linear: nn.Linear, index: torch.Tensor) -> None:
    index = index.to(linear.weight.device)
    linear.weight = nn.Parameter(linear.weight.data.index_select(0, index).contiguous(),
                                 requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.data.index_select(0, index).contiguous(),
                                   requires_grad=linear.bias.requires_grad)
    linear.out_features = int(index.numel())


def _keep_columns(linear: nn.Linear, index: torch.Tensor) -> None:
    index = index.to(linear.weight.device)
    linear.weight = nn.Parameter(linear.weight.data.index_select(1, index).contiguous(),
                                 requires_grad=linear.weight.requires_grad)
    linear.in_features = int(index.numel())


def _intermediate_size(model: nn.Module) -> tuple[int, int]:
    config = getattr(model, "config", None)
    intermediate = getattr(config, "intermediate_size", None)
    hidden = getattr(config, "hidden_size", None)
    if not isinstance(intermediate, int) or not isinstance(hidden, int):
        raise RecipeError("MLP pruning needs a model config with one integer intermediate_size and hidden_size")
    if intermediate == hidden:
        raise RecipeError("the MLP is as wide as the hidden size, so its layers cannot be told apart by shape")
    return intermediate, hidden


@register("mlp_prune", title="MLP neuron pruning", family="pruning",
          summary="Remove the least important MLP neurons (activation size × weight size on calibration "
                  "text) in every layer. Really shrinks the model and speeds it up; quality drops, "
                  "distillation can recover some.",
          config=MLPPruneConfig, needs=Needs(calibration_data=True, tasks=("causal-lm",)))
def apply_mlp_prune(model, config: MLPPruneConfig, ctx):
    """Handler: measure down-projection input norms block by block, slice the MLPs, set intermediate_size."""
    intermediate, _ = _intermediate_size(model)
    kept = kept_width(intermediate, config.reduction, config.multiple_of)
    blocks_name, blocks = find_blocks(model)
    found = [_mlp_linears(block, f"{blocks_name}.{i}", intermediate) for i, block in enumerate(blocks)]
    downs = {name: (down, ups) for name, down, ups in found}
    before = parameter_count(model)
    windows = ctx.calibration_windows()
    rows: list[dict] = []

    def compress(block):
        for name, linear in block.linears.items():
            down, ups = downs[name]
            scores = neuron_scores(block.stats[name].norms(), down.weight)
            keep = top_neurons(scores, kept)
            dropped = torch.ones_like(scores, dtype=torch.bool)
            dropped[keep.to(scores.device)] = False
            total = float(scores.sum())
            share = float(scores[dropped].sum()) / total if total > 0 else 0.0
            with torch.no_grad():
                for up in ups:
                    _keep_rows(up, keep)
                _keep_columns(linear, keep)
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


# ------------------------------------------------------------------------------- decoder layers
@dataclass
class LayerDropConfig:
    layers_to_drop: int = param(1, "How many whole decoder layers to remove (those that change the hidden "
                                "state least on calibration text).", minimum=1)


def block_influence(inputs: torch.Tensor, outputs: torch.Tensor) -> tuple[float, int]:
    """(sum of 1 − cos(h_in, h_out) over tokens, token count) for hidden states [..., hidden]."""
    a = inputs.reshape(-1, inputs.shape[-1]).to(torch.float32)
    b = outputs.reshape(-1, outputs.shape[-1]).to(torch.float32)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return float((1.0 - cos).sum()), a.shape[0]


def _block_outputs(block, inputs, kwargs_list):
    outputs = []
    with torch.no_grad():
        for x, kwargs in zip(inputs, kwargs_list, strict=True):
            out = block(x, **kwargs)
            outputs.append(out[0] if isinstance(out, tuple | list) else out)
    return outputs


def drop_blocks(model: nn.Module, drop: list[int]) -> list[int]:
    """Remove the blocks at indices ``drop``, renumber the rest and fix the config; return the kept indices."""
    blocks_name, blocks = find_blocks(model)
    keep = [i for i in range(len(blocks)) if i not in set(drop)]
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


@register("layer_drop", title="Layer dropping", family="pruning",
          summary="Remove whole decoder layers that change the hidden state least on calibration text "
                  "(ShortGPT's Block Influence). Big, real savings in size and speed; quality drops "
                  "quickly beyond a few layers, distillation can recover some.",
          config=LayerDropConfig, needs=Needs(calibration_data=True, tasks=("causal-lm",)))
def apply_layer_drop(model, config: LayerDropConfig, ctx):
    """Handler: measure each block's influence on the calibration windows, drop the lowest, renumber."""
    blocks_name, blocks = find_blocks(model)
    count = len(blocks)
    if config.layers_to_drop >= count:
        raise RecipeError(f"layers_to_drop = {config.layers_to_drop} would remove every layer: this model "
                          f"has {count}; drop at most {count - 1}")
    before = parameter_count(model)
    windows = ctx.calibration_windows()
    device = next(model.parameters()).device
    use_cache = getattr(model.config, "use_cache", None) if hasattr(model, "config") else None
    if use_cache is not None:
        model.config.use_cache = False
    meter = ProgressMeter("Measuring block influence", count, ctx.step_index)
    influence: list[float] = []
    try:
        with torch.no_grad():
            inputs, kwargs_list = capture_block_inputs(model, blocks, windows, device)
        for index, block in enumerate(blocks):
            outputs = _block_outputs(block, inputs, kwargs_list)
            total, tokens = 0.0, 0
            for x, y in zip(inputs, outputs, strict=True):
                part, n = block_influence(x, y)
                total, tokens = total + part, tokens + n
            influence.append(total / tokens)
            yield LayerStat(f"{blocks_name}.{index}", "block_influence", influence[-1], ctx.step_index)
            inputs = outputs
            event = meter.update(index + 1)
            if event:
                yield event
    finally:
        if use_cache is not None:
            model.config.use_cache = use_cache
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


# ------------------------------------------------------------------------------- attention heads
@dataclass
class AttentionPruneConfig:
    kv_heads_to_remove: int = param(1, "How many key/value heads to remove in every layer, each together with "
                                    "the query heads that share it (all heads when the model has no grouped "
                                    "attention).", minimum=1)


_ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj")


def _attention_shape(model: nn.Module) -> tuple[int, int, int]:
    """(query heads, key/value heads, head size) from the config; RecipeError if it does not say."""
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None)
    if not all(isinstance(v, int) for v in (heads, kv_heads, hidden)) or heads % kv_heads:
        raise RecipeError("attention head pruning needs a config with integer num_attention_heads, "
                          "num_key_value_heads and hidden_size")
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return heads, kv_heads, head_dim


def _attention_modules(block: nn.Module, prefix: str, heads: int, kv_heads: int, head_dim: int):
    """(name, attention module) of one block: the module with separate q/k/v/o projections of the right shapes."""
    for name, module in block.named_modules():
        parts = [getattr(module, n, None) for n in _ATTENTION_NAMES]
        if not all(isinstance(p, nn.Linear) for p in parts):
            continue
        q, k, v, o = parts
        if (q.out_features, k.out_features, v.out_features, o.in_features) == (
                heads * head_dim, kv_heads * head_dim, kv_heads * head_dim, heads * head_dim):
            return f"{prefix}.{name}" if name else prefix, module
    raise RecipeError(f"{prefix}: no attention module with separate q_proj/k_proj/v_proj/o_proj Linears of "
                      f"{heads} query and {kv_heads} key/value heads; head pruning does not support this "
                      "architecture")


def kv_group_scores(input_norms: torch.Tensor, o_weight: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """Importance of each key/value group: Σ ‖X_j‖ · ‖W_o[:, j]‖ over the o_proj inputs of its query heads."""
    per_column = neuron_scores(input_norms, o_weight)
    return per_column.reshape(kv_heads, -1).sum(dim=1)


def _head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices of the given heads in a [heads * head_dim, ...] projection."""
    return (heads.reshape(-1, 1) * head_dim + torch.arange(head_dim, device=heads.device)).reshape(-1)


@register("attention_prune", title="Attention head pruning", family="pruning",
          summary="Remove the least important attention heads (a key/value head with its query heads) in every "
                  "layer, by attention output size × weight size on calibration text. Shrinks the model and "
                  "the KV cache; quality drops, distillation can recover some.",
          config=AttentionPruneConfig, needs=Needs(calibration_data=True, tasks=("causal-lm",)))
def apply_attention_prune(model, config: AttentionPruneConfig, ctx):
    """Handler: score key/value groups by o_proj input norms block by block, slice q/k/v/o, fix the config."""
    heads, kv_heads, head_dim = _attention_shape(model)
    if config.kv_heads_to_remove >= kv_heads:
        raise RecipeError(f"kv_heads_to_remove = {config.kv_heads_to_remove} would remove every attention head: "
                          f"this model has {kv_heads} key/value heads; remove at most {kv_heads - 1}")
    group = heads // kv_heads
    kept_groups = kv_heads - config.kv_heads_to_remove
    blocks_name, blocks = find_blocks(model)
    attentions = [_attention_modules(b, f"{blocks_name}.{i}", heads, kv_heads, head_dim)
                  for i, b in enumerate(blocks)]
    by_o = {f"{name}.o_proj": module for name, module in attentions}
    before = parameter_count(model)
    windows = ctx.calibration_windows()
    rows: list[dict] = []

    def compress(block):
        for name, o_proj in block.linears.items():
            attention = by_o[name]
            scores = kv_group_scores(block.stats[name].norms(), o_proj.weight, kv_heads)
            keep = top_neurons(scores, kept_groups)
            query_heads = (keep.reshape(-1, 1) * group + torch.arange(group, device=keep.device)).reshape(-1)
            with torch.no_grad():
                _keep_rows(attention.q_proj, _head_rows(query_heads, head_dim))
                _keep_rows(attention.k_proj, _head_rows(keep, head_dim))
                _keep_rows(attention.v_proj, _head_rows(keep, head_dim))
                _keep_columns(attention.o_proj, _head_rows(query_heads, head_dim))
            for attribute, value in (("num_heads", group * kept_groups), ("num_key_value_heads", kept_groups),
                                     ("num_attention_heads", group * kept_groups)):
                if isinstance(getattr(attention, attribute, None), int):
                    setattr(attention, attribute, value)
            total = float(scores.sum())
            share = 1.0 - float(scores[keep].sum()) / total if total > 0 else 0.0
            rows.append({"layer": block.name, "kv_heads_kept": keep.tolist(), "removed_importance": share})
            yield LayerStat(block.name, "removed_importance", share, ctx.step_index)

    yield from run_blockwise(model, windows, make_stats=InputNormStats, compress_block=compress,
                             targets=list(by_o), ignore=[], device=ctx.device, stage="Attention head pruning",
                             step_index=ctx.step_index)
    model.config.head_dim = head_dim  # it was implied by hidden_size / heads, which no longer holds
    model.config.num_attention_heads = group * kept_groups
    model.config.num_key_value_heads = kept_groups
    after = parameter_count(model)
    return StepReport(
        summary=f"Removed {config.kv_heads_to_remove} of {kv_heads} key/value heads ({heads} → "
                f"{group * kept_groups} query heads) in each of {len(blocks)} layers: "
                f"{before / 1e6:.2f}M → {after / 1e6:.2f}M parameters.",
        metrics={"parameters_before": before, "parameters_after": after,
                 "parameter_reduction": 1.0 - after / before, "attention_heads": group * kept_groups,
                 "key_value_heads": kept_groups, "layers": len(blocks), "calibration_tokens": int(windows.numel())},
        layers=rows,
        notes=list(STRUCTURED_NOTES) + ["The KV cache shrinks in proportion to the key/value heads removed."])
