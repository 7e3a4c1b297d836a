"""Attention head pruning aware of grouped-query attention: remove whole key/value groups.

A key/value group is one key/value head together with the query heads that share it.  Removing
the same number of groups in every layer keeps ``num_attention_heads`` and
``num_key_value_heads`` single integers, so plain transformers loads the result (``head_dim`` is
written into the config, since ``hidden_size / heads`` no longer gives it).

* :func:`keep_kv_groups` — model surgery with explicit choices (which groups each layer keeps),
  no calibration; for building a student with fewer heads.
* ``attention_prune`` (:func:`apply_attention_prune`) — the registered step: ranks groups by
  Σ ‖X_j‖ · ‖W_o[:, j]‖ over the o_proj inputs of each group's query heads on calibration text.

Needs separate q_proj/k_proj/v_proj/o_proj Linears (found by name and shape).
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

_ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class AttentionPruneConfig:
    kv_heads_to_remove: int = param(1, "How many key/value heads to remove in every layer, each together with "
                                    "the query heads that share it (all heads when the model has no grouped "
                                    "attention).", minimum=1, label="Key/value heads to remove")

    def check_model(self, model: nn.Module) -> None:
        """RecipeError unless ``model`` has separate q/k/v/o projections and keeps at least one head."""
        _, kv_heads, _ = attention_shape(model)
        if self.kv_heads_to_remove >= kv_heads:
            raise RecipeError(f"kv_heads_to_remove = {self.kv_heads_to_remove} would remove every attention "
                              f"head: this model has {kv_heads} key/value heads; remove at most {kv_heads - 1}")
        attention_modules(model)


def attention_shape(model: nn.Module) -> tuple[int, int, int]:
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


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, attention module) of every block: the module with q/k/v/o projections of the config's shapes."""
    heads, kv_heads, head_dim = attention_shape(model)
    blocks_name, blocks = find_blocks(model)
    found = []
    for index, block in enumerate(blocks):
        prefix = f"{blocks_name}.{index}"
        for name, module in block.named_modules():
            parts = [getattr(module, n, None) for n in _ATTENTION_NAMES]
            if not all(isinstance(p, nn.Linear) for p in parts):
                continue
            q, k, v, o = parts
            if (q.out_features, k.out_features, v.out_features, o.in_features) == (
                    heads * head_dim, kv_heads * head_dim, kv_heads * head_dim, heads * head_dim):
                found.append((f"{prefix}.{name}" if name else prefix, module))
                break
        else:
            raise RecipeError(f"{prefix}: no attention module with separate q_proj/k_proj/v_proj/o_proj Linears "
                              f"of {heads} query and {kv_heads} key/value heads; head pruning does not support "
                              "this architecture")
    return found


def kv_group_scores(input_norms: torch.Tensor, o_weight: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """Importance of each key/value group: Σ ‖X_j‖ · ‖W_o[:, j]‖ over the o_proj inputs of its query heads."""
    per_column = neuron_scores(input_norms, o_weight)
    return per_column.reshape(kv_heads, -1).sum(dim=1)


def head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices of the given heads in a [heads * head_dim, ...] projection."""
    return (heads.reshape(-1, 1) * head_dim + torch.arange(head_dim, device=heads.device)).reshape(-1)


def slice_attention(attention: nn.Module, keep_groups: torch.Tensor, group: int, head_dim: int) -> None:
    """Keep key/value groups ``keep_groups`` of one attention module (``group`` query heads per group).

    Slices q/k/v rows and o columns and updates head-count attributes the module may carry.
    """
    keep_groups = torch.as_tensor(keep_groups, dtype=torch.long)
    query_heads = (keep_groups.reshape(-1, 1) * group + torch.arange(group)).reshape(-1)
    keep_rows(attention.q_proj, head_rows(query_heads, head_dim))
    keep_rows(attention.k_proj, head_rows(keep_groups, head_dim))
    keep_rows(attention.v_proj, head_rows(keep_groups, head_dim))
    keep_columns(attention.o_proj, head_rows(query_heads, head_dim))
    kept = int(keep_groups.numel())
    for attribute, value in (("num_heads", group * kept), ("num_key_value_heads", kept),
                             ("num_attention_heads", group * kept)):
        if isinstance(getattr(attention, attribute, None), int):
            setattr(attention, attribute, value)


def _set_head_config(model: nn.Module, heads: int, kv_heads: int, head_dim: int) -> None:
    model.config.head_dim = head_dim  # it was implied by hidden_size / heads, which no longer holds
    model.config.num_attention_heads = heads
    model.config.num_key_value_heads = kv_heads


def keep_kv_groups(model: nn.Module, per_layer_groups: Sequence) -> tuple[int, int]:
    """Keep the given key/value groups in every layer; return the new (query heads, key/value heads).

    ``per_layer_groups[i]`` lists the key/value head indices block i keeps (each with its query
    heads); every block must keep the same number.  Changes shapes and config in place, no data
    needed: e.g. ``keep_kv_groups(student, [[0, 1]] * 30)``.  Raises ValueError for a wrong number
    of layers, unequal counts or out-of-range groups.
    """
    heads, kv_heads, head_dim = attention_shape(model)
    attentions = attention_modules(model)
    indices = check_per_layer(per_layer_groups, len(attentions), kv_heads, "per_layer_groups", "key/value groups")
    group = heads // kv_heads
    for (_, attention), keep in zip(attentions, indices, strict=True):
        slice_attention(attention, keep, group, head_dim)
    kept = int(indices[0].numel())
    _set_head_config(model, group * kept, kept, head_dim)
    return group * kept, kept


@register("attention_prune", title="Attention head pruning", family="pruning",
          summary="Remove the least important attention heads (a key/value head with its query heads) in every "
                  "layer, by attention output size × weight size on calibration text. Shrinks the model and "
                  "the KV cache; quality drops, distillation can recover some.",
          config=AttentionPruneConfig, needs=Needs(calibration_data=True, tasks=("causal-lm",)))
def apply_attention_prune(model, config: AttentionPruneConfig, ctx):
    """Handler: score key/value groups by o_proj input norms block by block, slice q/k/v/o, fix the config."""
    config.check_model(model)
    heads, kv_heads, head_dim = attention_shape(model)
    group = heads // kv_heads
    kept_groups = kv_heads - config.kv_heads_to_remove
    attentions = attention_modules(model)
    by_o = {f"{name}.o_proj": module for name, module in attentions}
    before = parameter_count(model)
    windows = ctx.calibration_windows()
    rows: list[dict] = []

    def compress(block):
        for name, o_proj in block.linears.items():
            scores = kv_group_scores(block.stats[name].norms(), o_proj.weight, kv_heads)
            keep = top_neurons(scores, kept_groups)
            slice_attention(by_o[name], keep.cpu(), group, head_dim)
            share = removed_share(scores, keep)
            rows.append({"layer": block.name, "kv_heads_kept": keep.tolist(), "removed_importance": share})
            yield LayerStat(block.name, "removed_importance", share, ctx.step_index)

    yield from run_blockwise(model, windows, make_stats=InputNormStats, compress_block=compress,
                             targets=list(by_o), ignore=[], device=ctx.device, stage="Attention head pruning",
                             step_index=ctx.step_index)
    _set_head_config(model, group * kept_groups, kept_groups, head_dim)
    after = parameter_count(model)
    return StepReport(
        summary=f"Removed {config.kv_heads_to_remove} of {kv_heads} key/value heads ({heads} → "
                f"{group * kept_groups} query heads) in each of {len(attentions)} layers: "
                f"{before / 1e6:.2f}M → {after / 1e6:.2f}M parameters.",
        metrics={"parameters_before": before, "parameters_after": after,
                 "parameter_reduction": 1.0 - after / before, "attention_heads": group * kept_groups,
                 "key_value_heads": kept_groups, "layers": len(attentions),
                 "calibration_tokens": int(windows.numel())},
        layers=rows,
        notes=list(STRUCTURED_NOTES) + ["The KV cache shrinks in proportion to the key/value heads removed."])
