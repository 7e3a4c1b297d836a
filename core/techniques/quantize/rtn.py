"""Round-to-nearest (RTN) weight quantization: no data, every weight to its nearest grid point.

Each target Linear's weight is split into groups of ``group_size`` inputs per output row; each
group gets a min-max scale (and zero point if asymmetric) and every weight is rounded to the
nearest code, so |w − ŵ| ≤ scale / 2 inside the range.  The layer becomes a
:class:`PackedLinear` (packed codes + scales), saved in the compressed-tensors format.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.events import LayerStat, ProgressMeter
from core.params import param
from core.registry import StepReport, register
from core.targets import DEFAULT_IGNORE, DEFAULT_TARGETS
from core.techniques.quantize.common import (
    BITS_HELP,
    GROUP_HELP,
    QUANT_NOTES,
    SYMMETRIC_HELP,
    check_bits,
    check_group_setting,
    check_targets,
    check_widths,
    mark_quantized,
    replace_module,
    size_metrics,
)
from core.techniques.quantize.grid import round_to_grid
from core.techniques.quantize.packed_linear import PackedLinear


@dataclass
class RTNConfig:
    bits: int = param(4, BITS_HELP)
    group_size: int = param(64, GROUP_HELP)
    symmetric: bool = param(True, SYMMETRIC_HELP)
    targets: list = param(list(DEFAULT_TARGETS), "Layer name patterns to quantize (shell globs, or re:regex).")
    ignore: list = param(list(DEFAULT_IGNORE), "Layer name patterns never quantized (the output head by default).")

    def validate(self) -> None:
        """Reject settings that cannot work (RecipeError naming what to choose instead)."""
        check_bits(self.bits)
        check_group_setting(self.group_size)
        check_targets(self.targets, self.ignore)


@register("rtn_quantize", title="Round-to-nearest quantization", family="quantization",
          summary="Store weights in 2–8 bits by rounding each to the nearest level of a per-group grid. "
                  "Needs no data and takes seconds; fine at 8 bits, clearly worse than GPTQ at 3–4 bits.",
          config=RTNConfig)
def apply_rtn_quantize(model, config: RTNConfig, ctx):
    """Handler: round every target Linear to its grid and replace it with a PackedLinear."""
    chosen = check_widths(model, config.targets, config.ignore, config.group_size)
    meter = ProgressMeter("Rounding weights", len(chosen), ctx.step_index)
    rows: list[dict] = []
    for index, (name, linear) in enumerate(chosen):
        with torch.no_grad():
            codes, scales, zeros = round_to_grid(linear.weight, config.bits, config.group_size, config.symmetric,
                                                 dtype=linear.weight.dtype)
            packed = PackedLinear.from_linear(linear, codes, scales, zeros, config.bits, config.group_size,
                                              config.symmetric)
            error = float((packed.dequantized_weight().float() - linear.weight.float()).pow(2).mean())
        replace_module(model, name, packed)
        info = packed.compression_info()
        rows.append({"layer": name, "params": info["params"], "bits": info["bits"], "weight_mse": error})
        yield LayerStat(name, "bits", info["bits"], ctx.step_index)
        event = meter.update(index + 1)
        if event:
            yield event
    mark_quantized(model)
    metrics = size_metrics(rows)
    group = config.group_size or "per-channel"
    return StepReport(
        summary=f"Rounded {len(rows)} layers to {config.bits} bits (group {group}): "
                f"{metrics['bits_per_weight']:.2f} bits per weight stored.",
        metrics=metrics, layers=rows,
        notes=QUANT_NOTES + ["weight_mse is each layer's mean squared weight change; RTN ignores how the "
                             "inputs use the weights, which GPTQ takes into account."])
