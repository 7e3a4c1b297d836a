"""Round-to-nearest (RTN) weight quantization: no data, every weight to its nearest grid point.

Each target Linear's weight is split into groups of ``group_size`` inputs per output row; each
group gets a scale (and zero point if asymmetric) and every weight is rounded to the nearest
code.  With ``clip="none"`` the scale spans the group's min-max range, so |w − ŵ| ≤ scale / 2;
with ``clip="mse"`` the range is shrunk by the factor that minimises the group's rounding error
(:func:`grid.mse_group_params`).  The layer becomes a :class:`PackedLinear` (packed codes +
scales), saved in the compressed-tensors format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from core.engine.registry import StepReport, register
from core.events import LayerStat, ProgressMeter
from core.models.module_swap import replace_module
from core.techniques.quantize.common import (
    QUANT_NOTES,
    WeightQuantConfig,
    check_widths,
    embedding_step,
    size_metrics,
)
from core.techniques.quantize.grid import round_to_grid
from core.techniques.quantize.packed_format import mark_quantized
from core.techniques.quantize.packed_linear import PackedLinear


@dataclass
class RTNConfig(WeightQuantConfig):
    """RTN needs nothing beyond the shared grid settings."""


def rtn_quantize_layers(model, chosen: list, bits_of: Callable[[str], int], config: WeightQuantConfig,
                        step_index: int | None = None):
    """Round each (name, Linear) in ``chosen`` at ``bits_of(name)`` bits into a PackedLinear.

    A generator yielding LayerStat/Progress events; returns the per-layer report rows.
    """
    meter = ProgressMeter("Rounding weights", len(chosen), step_index)
    rows: list[dict] = []
    for index, (name, linear) in enumerate(chosen):
        bits = bits_of(name)
        with torch.no_grad():
            codes, scales, zeros = round_to_grid(linear.weight, bits, config.group_size, config.symmetric,
                                                 dtype=linear.weight.dtype, clip=config.clip)
            packed = PackedLinear.from_linear(linear, codes, scales, zeros, bits, config.group_size,
                                              config.symmetric)
            error = float((packed.dequantized_weight().float() - linear.weight.float()).pow(2).mean())
        replace_module(model, name, packed)
        info = packed.compression_info()
        rows.append({"layer": name, "params": info["params"], "bits": info["bits"], "quant_bits": bits,
                     "weight_mse": error})
        yield LayerStat(name, "bits", info["bits"], step_index)
        event = meter.update(index + 1)
        if event:
            yield event
    return rows


@register("rtn_quantize", title="Round-to-nearest quantization", family="quantization",
          summary="Store weights in 2–8 bits by rounding each to the nearest level of a per-group grid. "
                  "Needs no data and takes seconds; fine at 8 bits, often at 4; clearly worse than GPTQ at 3 bits.",
          config=RTNConfig)
def apply_rtn_quantize(model, config: RTNConfig, ctx):
    """Handler: round every target Linear to its grid and replace it with a PackedLinear."""
    chosen = check_widths(model, config.targets, config.ignore, config.group_size)
    embedding, embedding_notes = yield from embedding_step(model, config, ctx.step_index)
    rows = yield from rtn_quantize_layers(model, chosen, lambda _name: config.bits, config, ctx.step_index)
    mark_quantized(model)
    metrics = {**size_metrics(rows), **embedding}
    group = config.group_size or "per-channel"
    clipped = " with MSE-clipped ranges" if config.clip == "mse" else ""
    return StepReport(
        summary=f"Rounded {len(rows)} layers to {config.bits} bits (group {group}){clipped}: "
                f"{metrics['bits_per_weight']:.2f} bits per weight stored.",
        metrics=metrics, layers=rows,
        notes=QUANT_NOTES + embedding_notes + ["weight_mse is each layer's mean squared weight change; RTN ignores how the "
                             "inputs use the weights, which GPTQ takes into account."])
