"""Mixed precision by sensitivity: the most sensitive layers keep more bits, to a target average.

1. Measure each target Linear's sensitivity at each candidate bit width (``sensitivity``:
   Fisher-predicted or measured loss increase when only that layer is rounded; see
   :mod:`sensitivity`), and emit them as LayerStat events ("sensitivity" at the low width, and
   "sensitivity_<b>bit" for every width) so the app can plot them.
2. Choose each layer's width with the greedy knapsack of :mod:`allocate` so the stored bits per
   weight — codes, scales and zero points, exactly as saved — average at most ``target_bits``.
3. Quantize every layer at its width with RTN or GPTQ into the same packed layout.  The
   compressed-tensors config gets one config group per (bits, group size, symmetry), each
   targeting its layers by exact name, so transformers, vLLM and our loader read it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.errors import RecipeError
from core.events import LayerStat, Log
from core.techniques.quantize.allocate import BitOption, allocate_bits, average_bits
from core.techniques.quantize.common import (
    QUANT_NOTES,
    check_bits,
    check_widths,
    embedding_step,
    size_metrics,
)
from core.techniques.quantize.gptq import GPTQ_NOTE, GPTQOptions, gptq_quantize_model
from core.techniques.quantize.packed_format import mark_quantized
from core.techniques.quantize.packed_linear import packed_storage_bytes
from core.techniques.quantize.rtn import rtn_quantize_layers
from core.techniques.quantize.sensitivity import MEASURES, measure_sensitivities


@dataclass
class MixedPrecisionConfig(GPTQOptions):
    bits: int = param(4, "The low bit width, what the least sensitive layers get (2–8; 4 is usual).",
                      label="Low bit width")
    high_bits: int = param(8, "The high bit width, kept by the most sensitive layers (more than the low one).",
                           label="High bit width")
    target_bits: float = param(5.0, "Average stored bits per weight over the quantized layers, scales and zero "
                               "points included (4-bit with group 64 and 32-bit scales already stores 4.5). "
                               "The budget is filled with the most sensitive layers first.",
                               minimum=2.0, maximum=16.0, label="Average bits per weight (target)")
    intermediate: bool = param(False, "Also allow every width between the low and the high one (e.g. 5, 6, 7), "
                               "not only the two.", label="Allow widths in between", expert=True)
    method: str = param("gptq", "How the layers are then quantized at their chosen widths: gptq (needs the "
                        "calibration text anyway, better) or rtn (plain rounding).", choices=("gptq", "rtn"),
                        label="How layers are quantized", expert=True)
    sensitivity: str = param("fisher", "fisher: loss increase predicted from gradients (one backward pass per "
                             "window, all layers at once). loss: measured loss increase with each layer rounded "
                             "alone (exact, but one pass per layer and width: slow on big models).",
                             choices=MEASURES, label="How sensitivity is measured", expert=True)
    sensitivity_windows: int = param(8, "Calibration windows used to measure sensitivity (the first ones).",
                                     minimum=1, maximum=4096,
                                     label="Text windows for sensitivity", expert=True)

    def validate(self) -> None:
        """Reject widths and targets that cannot work, naming what to choose instead."""
        super().validate()
        check_bits(self.high_bits)
        if self.high_bits <= self.bits:
            raise RecipeError(f"high_bits ({self.high_bits}) must be more than bits ({self.bits}): e.g. bits 4 "
                              "and high_bits 8")
        if self.target_bits <= self.bits:
            raise RecipeError(f"target_bits {self.target_bits:g} leaves no room above the low width of {self.bits} "
                              f"bits (scales add more): choose a target above {self.bits}, e.g. {self.bits + 1}")

    def levels(self) -> list[int]:
        """The bit widths a layer may get."""
        return list(range(self.bits, self.high_bits + 1)) if self.intermediate else [self.bits, self.high_bits]


def storage_options(chosen: list, config: MixedPrecisionConfig, sensitivities: dict | None = None
                    ) -> tuple[dict[str, list[BitOption]], dict[str, int]]:
    """Every layer's (bits, stored bits, sensitivity) options and its weight count."""
    options, params = {}, {}
    for name, linear in chosen:
        bias = linear.bias is not None
        params[name] = linear.in_features * linear.out_features + (linear.out_features if bias else 0)
        options[name] = [BitOption(bits, 8 * packed_storage_bytes(
            linear.in_features, linear.out_features, bits, config.group_size, config.symmetric,
            linear.weight.element_size(), bias), (sensitivities or {}).get(name, {}).get(bits, 0.0))
            for bits in config.levels()]
    return options, params


@register("mixed_precision_quantize", title="Mixed-precision quantization", family="quantization",
          summary="Measure how much each layer suffers from fewer bits, then keep the most sensitive layers at "
                  "the high width and the rest at the low one, to a target average bits per weight. Saved in "
                  "the same packed format as RTN/GPTQ.",
          config=MixedPrecisionConfig, needs=Needs(calibration_data=True, tasks=("causal-lm",)))
def apply_mixed_precision(model, config: MixedPrecisionConfig, ctx):
    """Handler: sensitivities -> per-layer widths for the target -> RTN or GPTQ at those widths."""
    chosen = check_widths(model, config.targets, config.ignore, config.group_size)
    options, params = storage_options(chosen, config)
    allocate_bits(options, params, config.target_bits)  # an unreachable target fails before any work
    windows = ctx.calibration_windows()
    # the embedding first, so sensitivities and Hessians see it as the result will have it
    embedding, embedding_notes = yield from embedding_step(model, config, ctx.step_index)
    linears = dict(chosen)
    sensitivities = yield from measure_sensitivities(
        config.sensitivity, model, linears, windows[:config.sensitivity_windows], config.levels(),
        config.group_size, config.symmetric, config.clip, ctx.step_index)
    for name in linears:
        yield LayerStat(name, "sensitivity", sensitivities[name][config.bits], ctx.step_index)
        for bits, value in sensitivities[name].items():
            yield LayerStat(name, f"sensitivity_{bits}bit", value, ctx.step_index)
    options, params = storage_options(chosen, config, sensitivities)
    plan = allocate_bits(options, params, config.target_bits)
    counts = {bits: sum(1 for b in plan.values() if b == bits) for bits in config.levels()}
    yield Log("Bit widths chosen: " + ", ".join(f"{n} layers at {b} bits" for b, n in counts.items() if n)
              + f" ({average_bits(options, params, plan):.3f} bits per weight planned)")
    if config.method == "gptq":
        rows = yield from gptq_quantize_model(model, windows, plan.__getitem__, config, ctx.device, ctx.step_index)
    else:
        rows = yield from rtn_quantize_layers(model, chosen, plan.__getitem__, config, ctx.step_index)
    for row in rows:
        row["sensitivity"] = sensitivities[row["layer"]]
    mark_quantized(model)
    metrics = {**size_metrics(rows), **embedding, "target_bits": config.target_bits,
               **{f"layers_at_{bits}_bits": float(n) for bits, n in counts.items()}}
    group = config.group_size or "per-channel"
    notes = QUANT_NOTES + embedding_notes + [
        f"sensitivity is the {'Fisher-predicted' if config.sensitivity == 'fisher' else 'measured'} increase of "
        f"the calibration loss (nats per token) when only that layer is rounded to each width, on "
        f"{min(config.sensitivity_windows, len(windows))} calibration windows.",
        "bits counts every stored byte of a layer (codes, scales, zero points) per weight; target_bits is "
        "met on that count."]
    if config.method == "gptq":
        notes.append(GPTQ_NOTE)
    split = ", ".join(f"{n}×{b}-bit" for b, n in counts.items() if n)
    return StepReport(
        summary=f"Quantized {len(rows)} layers with {config.method.upper()} at mixed widths ({split}, group "
                f"{group}): {metrics['bits_per_weight']:.2f} bits per weight stored (target "
                f"{config.target_bits:g}).",
        metrics=metrics, layers=rows, notes=notes)
