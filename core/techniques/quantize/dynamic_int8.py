"""Dynamic int8 (W8A8): int8 weights, and inputs quantized to int8 on the fly, for faster CPU inference.

Each targeted Linear becomes an ``Int8DynamicLinear`` (``int8_linear.py``): int8 weights with a
scale per output row; every token's input gets its own scale at every call, and the product is
summed exactly in int32.  Before quantizing, SmoothQuant (``smooth.py``, on by default) moves the
activation outliers of SmolLM2-like models into the weights, using calibration text; with it
switched off (``smoothing: 0``) no data is needed.  It runs on CPU only.

Saving: the ``dynamic_int8`` format writes an ordinary transformers folder whose weights are the
int8 weights dequantized to float32 (exactly ``q * scale``) plus ``dynamic_int8.safetensors``
holding the scales; our loader rounds the weights back to the same int8 values, so the reloaded
model is bit-identical.  Plain transformers loads the folder too, but only as a float model (the
int8 values and the smoothed norms, no speed-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.engine.targets import DEFAULT_IGNORE, DEFAULT_TARGETS, select_linears
from core.errors import ModelLoadError, RecipeError
from core.eval.speed import iter_measure_speed
from core.events import LayerStat, Log
from core.models.formats import SavedFormat, mark_format, model_format, read_manifest, register_format
from core.models.loading import _auto_class
from core.models.module_swap import replace_module
from core.techniques.quantize.int8_linear import Int8DynamicLinear, has_int8_matmul
from core.techniques.quantize.smooth import smooth_model

FORMAT = "dynamic_int8"
SCALES_FILE = "dynamic_int8.safetensors"


SMOOTHING_HELP = ("SmoothQuant strength α: before quantizing, move each input channel's outliers into the "
                  "weights (exact in float), using calibration text, so one int8 scale per token fits the rest. "
                  "0 switches it off (no data needed). On SmolLM2-135M 0.75 took perplexity from +1.9% to "
                  "+0.18% of float (40 evaluation windows); higher moves more difficulty into the weights.")


@dataclass
class DynamicInt8Config:
    smoothing: float = param(0.75, SMOOTHING_HELP, minimum=0.0, maximum=1.0,
                             label="Smoothing", expert=True)
    smoothing_windows: int = param(16, "Calibration windows whose largest activations set the smoothing (the "
                                   "first ones of the recipe's calibration text). More costs time: one pass each.",
                                   minimum=1, maximum=4096, label="Smoothing text windows", expert=True)
    per_channel: bool = param(True, "One int8 scale per output row (better quality) instead of one per layer.",
                              label="One scale per output row", expert=True)
    measure_speed: bool = param(True, "Time greedy decoding before and after (a few seconds on a small model) "
                                "and report the measured speed-up.", label="Measure the speed-up")
    targets: list[str] = param(list(DEFAULT_TARGETS), "Layer name patterns to quantize (shell globs, or re:regex).",
                               label="Layers to quantize (patterns)", expert=True)
    ignore: list[str] = param([*DEFAULT_IGNORE, "*down_proj"], "Layer name patterns kept in float. By default the output "
                         "head and the MLP down projections, whose inputs carry the largest outliers (on "
                         "SmolLM2-135M quantizing them too costs about 1% more perplexity even with smoothing).",
                              label="Layers kept in float (patterns)", expert=True)


def quantize_dynamic_int8(model: nn.Module, names: list[str], per_channel: bool = True) -> None:
    """Replace the named Linear layers of ``model`` in place by ``Int8DynamicLinear`` ones."""
    for name in names:
        replace_module(model, name, Int8DynamicLinear.from_linear(model.get_submodule(name), per_channel))


def _quantized_modules(model: nn.Module) -> list[tuple[str, Int8DynamicLinear]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, Int8DynamicLinear)]


def _mark(model: nn.Module, per_channel: bool, smoothing: float) -> None:
    mark_format(model, FORMAT, per_channel=per_channel, smoothing=smoothing, activations="int8 per token",
                layers=[n for n, _ in _quantized_modules(model)])


def save_dynamic(model: nn.Module, folder: Path) -> None:
    """Write float weights holding exactly the int8 values (plain transformers loads them), plus the scales."""
    from safetensors.torch import save_file

    layers = _quantized_modules(model)
    scales = {}
    with torch.no_grad():
        for name, module in layers:
            scales[f"{name}.scale"] = module.weight_scale.contiguous()
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            linear.weight.data = module.dequantized_weight()
            if module.bias is not None:
                linear.bias.data = module.bias.detach().clone()
            model.set_submodule(name, linear)
        try:
            model.save_pretrained(folder)
        finally:
            for name, module in layers:
                model.set_submodule(name, module)
    save_file(scales, str(Path(folder) / SCALES_FILE))


def load_dynamic(folder: Path, task: str):
    """Load the float weights and round the named layers back to their exact int8 values and scales."""
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest = read_manifest(folder) or {}
    if not (folder / SCALES_FILE).is_file():
        raise ModelLoadError(f"{folder} lacks {SCALES_FILE}; the dynamic int8 folder is incomplete")
    model = _auto_class(task).from_pretrained(folder, dtype="auto").eval()
    scales = load_file(str(folder / SCALES_FILE))
    names = list(manifest.get("layers") or [k[: -len(".scale")] for k in scales])
    for name in names:
        linear = model.get_submodule(name)
        scale = scales[f"{name}.scale"].float().reshape(-1).expand(linear.out_features)  # one per layer: size 1
        model.set_submodule(name, Int8DynamicLinear.from_dequantized(linear, scale))
    _mark(model, bool(manifest.get("per_channel", True)), float(manifest.get("smoothing", 0.0)))
    return model


register_format(SavedFormat(
    name=FORMAT, description="float weights holding the int8 values exactly, plus int8 scales; our loader "
                             "restores the int8 layers (activations quantized per token) bit-exactly",
    save=save_dynamic, load=load_dynamic, plain_transformers=True,
    notes=["Plain transformers loads only the float weights (same values, no int8 speed-up or memory saving)."]))


@register("dynamic_int8", title="Dynamic int8 (CPU)", family="quantization",
          summary="Store Linear weights as int8 and quantize each token's inputs to int8 on the fly (W8A8), "
                  "after SmoothQuant moves activation outliers into the weights. Faster decoding on CPU "
                  "(measured and reported), about float quality. CPU only.",
          config=DynamicInt8Config, needs=Needs(calibration_data=True, cpu_only=True))
def apply_dynamic_int8(model, config: DynamicInt8Config, ctx):
    """Handler: optional SmoothQuant pass over calibration text, then int8 Linears; speed timed before/after."""
    if ctx.device != "cpu":
        raise RecipeError(f"dynamic int8 runs on CPU only (int8 CPU kernels), not on {ctx.device}: run this "
                          "step on CPU, or choose bnb_quantize for a GPU")
    if (model_format(model) is not None or getattr(model, "is_quantized", False)
            or getattr(model.config, "quantization_config", None) is not None):
        raise RecipeError("dynamic int8 needs a float model: put it after pruning steps and instead of other "
                          "quantization steps")
    if not has_int8_matmul():
        raise RecipeError("this PyTorch build has no int8 matrix multiply (torch._int_mm); dynamic int8 cannot "
                          "run here: choose rtn_quantize with 8 bits instead")
    names = [name for name, _ in select_linears(model, config.targets, config.ignore)]
    before = after = None
    if config.measure_speed:
        yield Log("Timing decoding before dynamic int8")
        before = yield from iter_measure_speed(model, ctx.tokenizer, prompt_tokens=64, new_tokens=32)
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        model.float()  # the saved float weights must hold q * scale exactly, which bfloat16 cannot
    notes = []
    if config.smoothing > 0:
        skipped = yield from smooth_model(model, ctx.calibration_windows()[:config.smoothing_windows], config.smoothing,
                                          targets=config.targets, ignore=config.ignore, device=ctx.device,
                                          step_index=ctx.step_index)
        notes.append(f"SmoothQuant (α = {config.smoothing:g}) folded per-channel scales into the norms, up_proj "
                     "and v_proj in front of the quantized layers; in float the model computes the same.")
        notes += [f"SmoothQuant skipped {line}" for line in skipped]
    quantize_dynamic_int8(model, names, config.per_channel)
    _mark(model, config.per_channel, config.smoothing)
    rows = []
    for name, module in _quantized_modules(model):
        info = module.compression_info()
        rows.append({"layer": name, "bits": info["bits"], "params": info["params"]})
        yield LayerStat(name, "bits", info["bits"], ctx.step_index)
    weights = sum(r["params"] for r in rows)
    metrics = {"layers": len(rows), "quantized_weights": weights,
               "bits_per_weight": sum(r["bits"] * r["params"] for r in rows) / weights if weights else 0.0}
    notes += ["Inputs are quantized per token at every call (one int8 scale per token); the embeddings, norms "
              "and ignored layers stay float.",
              "Saved as float weights holding the int8 values plus scales: our loader restores int8 bit-exactly; "
              "plain transformers loads the float weights only (same quality, no speed-up)."]
    if dtype != torch.float32:
        notes.append(f"The model was converted from {dtype} to float32, so the saved weights hold the int8 "
                     "values exactly.")
    if config.measure_speed:
        yield Log("Timing decoding after dynamic int8")
        after = yield from iter_measure_speed(model, ctx.tokenizer, prompt_tokens=64, new_tokens=32)
        metrics.update(decode_tokens_per_s_before=before.decode_tokens_per_s,
                       decode_tokens_per_s_after=after.decode_tokens_per_s,
                       decode_speedup=after.decode_tokens_per_s / before.decode_tokens_per_s)
        notes.append(f"Measured decode speed: {before.decode_tokens_per_s:.1f} -> {after.decode_tokens_per_s:.1f} "
                     f"tokens/s (median of 3 runs, 64-token prompt, 32 new tokens, batch 1, this machine).")
    speedup = f", decode x{metrics['decode_speedup']:.2f}" if "decode_speedup" in metrics else ""
    return StepReport(summary=f"Dynamic int8 on {len(rows)} Linear layers{speedup}.", metrics=metrics,
                      layers=rows, notes=notes)
