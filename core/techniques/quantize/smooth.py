"""SmoothQuant: move activation outliers into the weights before quantizing activations to int8.

A few input channels of a transformer's Linears carry values tens of times larger than the rest
(the normalised hidden states of SmolLM2 do), and one activation scale per call must stretch to
hold them, so every other channel is rounded coarsely.  SmoothQuant (Xiao et al., 2023) divides
input channel j by

    s_j = max|X_j|^α / max|W_{:,j}|^(1-α)

and multiplies the weights' column j by s_j, which leaves the product unchanged in float.  The
division is folded into whatever produced X: the weight vector of the norm in front of q/k/v or
gate/up, the rows of up_proj in front of down_proj, the rows of v_proj in front of o_proj.  No
extra operation runs at inference, and the model is still an ordinary float model until it is
quantized.  α moves difficulty from activations (α → 1) to weights (α → 0).

Which module feeds which Linears is named by ``MAPPINGS`` (the Llama family's names, as
llm-compressor's defaults do); a mapping whose modules are not all there is skipped, and a norm
that does not scale its output by a plain weight vector (e.g. Gemma's 1 + w) is detected by a
check on random input and left alone.  The math is in pure functions; ``smooth_model`` runs them
block by block on the shared calibration engine.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.engine.calibration import Block, run_blockwise
from core.events import Log

SCALE_FLOOR = 1e-5  # keeps a dead channel (max |X| or max |W| = 0) from dividing by zero


@dataclass(frozen=True)
class Mapping:
    """``previous`` (relative to a block) produces the input that every one of ``consumers`` reads."""

    previous: str
    consumers: tuple[str, ...]


MAPPINGS = (
    Mapping("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    Mapping("self_attn.v_proj", ("self_attn.o_proj",)),
    Mapping("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    Mapping("mlp.up_proj", ("mlp.down_proj",)),
)


class ChannelMaxStats:
    """Running max |x_j| per input channel over every calibration token."""

    def __init__(self, linear: nn.Linear):
        self.max = torch.zeros(linear.in_features, dtype=torch.float32, device=linear.weight.device)

    def add(self, x: torch.Tensor) -> None:
        self.max = torch.maximum(self.max, x.detach().reshape(-1, x.shape[-1]).abs().amax(dim=0).float())

    def all_reduce(self, reduce) -> None:
        """The maximum over every process's windows (see core.engine.distributed)."""
        reduce(self.max, "max")


def smoothing_scales(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^α / max|W_j|^(1-α) (SmoothQuant, eq. 4), per input channel j."""
    act = act_max.float().clamp(min=SCALE_FLOOR)
    weight = weight_max.float().clamp(min=SCALE_FLOOR)
    return (act.pow(alpha) / weight.pow(1 - alpha)).clamp(min=SCALE_FLOOR)


def column_max(linears: list[nn.Linear]) -> torch.Tensor:
    """max |W_{:,j}| over the rows of every Linear that reads the same input."""
    return torch.stack([linear.weight.detach().abs().amax(dim=0).float() for linear in linears]).amax(dim=0)


def share_over_kv_groups(values: torch.Tensor, num_kv_heads: int, query_groups: int) -> torch.Tensor:
    """Max over the query heads that read one key/value head, broadcast back to every query channel.

    o_proj's input is the attention output, one slice per query head; with grouped-query attention
    ``query_groups`` consecutive query heads all read the same v_proj head, so a scale folded into
    that head's v_proj rows must be the same for all of them.
    """
    grouped = values.reshape(num_kv_heads, query_groups, -1)
    return grouped.amax(dim=1, keepdim=True).expand_as(grouped).reshape(-1)


def fold_into_linears(consumers: list[nn.Linear], scales: torch.Tensor) -> None:
    """Multiply every consumer's column j by s_j."""
    for linear in consumers:
        linear.weight.data.mul_(scales.to(linear.weight.dtype)[None, :])


def fold_into_previous(previous: nn.Module, scales: torch.Tensor) -> None:
    """Divide the output channel j of ``previous`` (a Linear's row, or a norm's weight) by s_j."""
    weight = previous.weight.data
    shaped = scales.to(weight.dtype)
    weight.div_(shaped[:, None] if weight.dim() == 2 else shaped)
    bias = getattr(previous, "bias", None)
    if bias is not None:
        bias.data.div_(shaped)


def norm_scales_output(norm: nn.Module, width: int) -> bool:
    """Whether dividing ``norm.weight`` by s divides the norm's output by s (plain ``weight * x̂``).

    Checked on random input with a throwaway scale, so a norm computing ``(1 + weight) * x̂`` or
    anything else is recognised and left alone.
    """
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or weight.numel() != width:
        return False
    probe = torch.randn(2, width, generator=torch.Generator().manual_seed(0)).to(weight)
    trial = torch.linspace(0.5, 2.0, width, dtype=weight.dtype, device=weight.device)
    original = weight.data.clone()
    with torch.no_grad():
        before = norm(probe)
        weight.data.div_(trial)
        after = norm(probe)
        weight.data.copy_(original)
    # loose enough for bfloat16 rounding; a norm of another form misses by far more (trial spans 0.5-2)
    return torch.allclose(after * trial, before, rtol=2e-2, atol=1e-4)


def _attention_shape(model: nn.Module) -> tuple[int, int] | None:
    """(key/value heads, query heads per key/value head), or None when the config does not say."""
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if not heads or not kv_heads or heads % kv_heads:
        return None
    return kv_heads, heads // kv_heads


def smooth_block(block: Block, alpha: float, attention: tuple[int, int] | None) -> list[str]:
    """Fold SmoothQuant scales into one block, for every mapping whose consumers were calibrated.

    Returns a line for each mapping skipped, saying why.
    """
    skipped = []
    for mapping in MAPPINGS:
        names = [f"{block.name}.{consumer}" for consumer in mapping.consumers]
        if not all(name in block.linears for name in names):
            continue  # not quantized (ignored, or not this architecture): nothing to smooth
        try:
            previous = block.module.get_submodule(mapping.previous)
        except AttributeError:
            skipped.append(f"{block.name}: no {mapping.previous} in front of {mapping.consumers}")
            continue
        consumers = [block.linears[name] for name in names]
        act_max, weight_max = block.stats[names[0]].max, column_max(consumers)
        if isinstance(previous, nn.Linear):
            if previous.out_features != consumers[0].in_features:  # grouped-query attention: v_proj -> o_proj
                if attention is None or previous.out_features * attention[1] != consumers[0].in_features:
                    skipped.append(f"{block.name}.{mapping.previous}: its width does not match "
                                   f"{mapping.consumers[0]}'s input")
                    continue
                kv_heads, groups = attention
                scales = share_over_kv_groups(smoothing_scales(
                    share_over_kv_groups(act_max, kv_heads, groups),
                    share_over_kv_groups(weight_max, kv_heads, groups), alpha), kv_heads, groups)
                fold_into_linears(consumers, scales)
                fold_into_previous(previous, scales.reshape(kv_heads, groups, -1)[:, 0, :].reshape(-1))
                continue
        elif not norm_scales_output(previous, consumers[0].in_features):
            skipped.append(f"{block.name}.{mapping.previous}: not a plain scale-vector norm, left unsmoothed")
            continue
        scales = smoothing_scales(act_max, weight_max, alpha)
        fold_into_linears(consumers, scales)
        fold_into_previous(previous, scales)
    return skipped


def smooth_model(model: nn.Module, windows: torch.Tensor, alpha: float, *, targets: list[str],
                 ignore: list[str], device: Any = None, step_index: int | None = None
                 ) -> Generator[Any, None, list[str]]:
    """Fold SmoothQuant scales into ``model`` in place, block by block; the float model's outputs are unchanged.

    Yields progress events; returns the lines saying which mappings were skipped and why.
    """
    attention = _attention_shape(model)
    skipped: list[str] = []

    def compress(block: Block) -> Generator[Any, None, None]:
        lines = smooth_block(block, alpha, attention)
        skipped.extend(lines)
        for line in lines:
            yield Log(f"SmoothQuant: {line}")

    yield from run_blockwise(model, windows, make_stats=ChannelMaxStats, compress_block=compress, targets=targets,
                             ignore=ignore, device=device, stage="Smoothing activations", step_index=step_index)
    return skipped
