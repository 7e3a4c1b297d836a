"""Dynamic int8: PyTorch's dynamic quantization of Linear layers, for faster CPU inference.

Weights are stored as int8 (one scale per output row, or one per layer); activations are quantized
on the fly at every call, so no calibration data is needed.  It runs on CPU only (fbgemm/x86/qnnpack
kernels).  torch 2.13 still ships it as ``torch.ao.quantization.quantize_dynamic`` and marks it
deprecated in favour of torchao; it works, and the deprecation warnings are silenced here.

Saving: dynamically quantized modules do not ``save_pretrained``.  The ``dynamic_int8`` format
writes an ordinary transformers folder whose weights are the int8 weights dequantized to float
(exactly ``q * scale``) plus ``dynamic_int8.safetensors`` holding the scales; our loader rounds the
weights back to the same int8 values and scales, so the reloaded model is bit-identical.  Plain
transformers loads the folder too, but only as a float model (the int8 values, no speed-up).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.errors import ModelLoadError, RecipeError
from core.events import LayerStat, Log
from core.formats import SavedFormat, mark_format, model_format, register_format
from core.params import param
from core.registry import Needs, StepReport, register
from core.targets import DEFAULT_IGNORE, DEFAULT_TARGETS, select_linears

FORMAT = "dynamic_int8"
SCALES_FILE = "dynamic_int8.safetensors"


@contextlib.contextmanager
def _quiet():
    """torch.ao.quantization warns that it is deprecated on every call; the report says so once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@functools.cache
def _dynamic_linear_type() -> type:
    """torch's dynamic int8 Linear, with ``weight`` readable as a tensor like every other layer's.

    torch exposes the int8 weight as a method ``weight()``; the app's size accounting reads
    ``module.weight`` as a tensor, so this subclass makes it a property (and fixes ``extra_repr``).
    """
    from torch.ao.nn.quantized.dynamic import Linear

    class DynamicInt8Linear(Linear):
        @property
        def weight(self) -> torch.Tensor:
            return self._weight_bias()[0]

        def extra_repr(self) -> str:
            return (f"in_features={self.in_features}, out_features={self.out_features}, "
                    f"dtype={self._packed_params.dtype}, qscheme={self.weight.qscheme()}")

    return DynamicInt8Linear


@dataclass
class DynamicInt8Config:
    per_channel: bool = param(True, "One int8 scale per output row (better quality) instead of one per layer.")
    measure_speed: bool = param(True, "Time greedy decoding before and after (a few seconds on a small model) "
                                "and report the measured speed-up.")
    targets: list = param(list(DEFAULT_TARGETS), "Layer name patterns to quantize (shell globs, or re:regex).")
    ignore: list = param([*DEFAULT_IGNORE, "*down_proj"], "Layer name patterns kept in float. By default the output "
                         "head and the MLP down projections, whose inputs carry outliers that one per-tensor "
                         "activation scale cannot hold (on SmolLM2-135M int8 there raises perplexity ~4x).")


def quantize_dynamic_int8(model: nn.Module, names: list[str], per_channel: bool = True) -> nn.Module:
    """Replace the named Linear layers of ``model`` in place by dynamically quantized int8 ones."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with _quiet():
        return quantize_dynamic(model, {name: qconfig for name in names}, dtype=torch.qint8, inplace=True,
                                mapping={nn.Linear: _dynamic_linear_type()})


def dynamic_layer_info(module) -> dict:
    """Logical weight count and storage bits per weight of one dynamic int8 Linear (scales included)."""
    weight = module.weight
    params = weight.numel()
    per_channel = weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    scales = weight.q_per_channel_scales().numel() if per_channel else 1
    # a scale and a zero point per row (or per layer), counted as 32 bits each
    return {"params": params, "bits": 8 + scales * 64 / params, "shape": list(weight.shape), "dtype": "qint8"}


def _quantized_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    kind = _dynamic_linear_type()
    return [(name, module) for name, module in model.named_modules() if isinstance(module, kind)]


def _mark(model: nn.Module, per_channel: bool) -> None:
    for _, module in _quantized_modules(model):
        module.compression_info = functools.partial(dynamic_layer_info, module)
    mark_format(model, FORMAT, per_channel=per_channel, layers=[n for n, _ in _quantized_modules(model)])


def save_dynamic(model: nn.Module, folder: Path) -> None:
    """Write float (dequantized) weights that plain transformers loads, plus the int8 scales."""
    from safetensors.torch import save_file

    layers = _quantized_modules(model)
    scales = {}
    with torch.no_grad():
        for name, module in layers:
            weight, bias = module._weight_bias()
            per_channel = weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
            scales[f"{name}.scale"] = (weight.q_per_channel_scales() if per_channel
                                       else torch.tensor([weight.q_scale()], dtype=torch.float64)).contiguous()
            linear = nn.Linear(module.in_features, module.out_features, bias=bias is not None)
            linear.weight.data = weight.dequantize().to(next(model.parameters()).dtype)
            if bias is not None:
                linear.bias.data = bias.detach().clone()
            model.set_submodule(name, linear)
        try:
            model.save_pretrained(folder)
        finally:
            for name, module in layers:
                model.set_submodule(name, module)
    save_file(scales, str(Path(folder) / SCALES_FILE))


def load_dynamic(folder: Path, task: str):
    """Load the float weights, re-apply dynamic int8 and restore the exact saved int8 values and scales."""
    from safetensors.torch import load_file

    from core.formats import read_manifest
    from core.models import _auto_class

    folder = Path(folder)
    manifest = read_manifest(folder) or {}
    if not (folder / SCALES_FILE).is_file():
        raise ModelLoadError(f"{folder} lacks {SCALES_FILE}; the dynamic int8 folder is incomplete")
    model = _auto_class(task).from_pretrained(folder, dtype="auto").eval()
    scales = load_file(str(folder / SCALES_FILE))
    names = list(manifest.get("layers") or [k[: -len(".scale")] for k in scales])
    per_channel = bool(manifest.get("per_channel", True))
    floats = {name: model.get_submodule(name) for name in names}
    quantize_dynamic_int8(model, names, per_channel)
    with torch.no_grad(), _quiet():
        for name in names:
            source, module = floats[name], model.get_submodule(name)
            scale = scales[f"{name}.scale"].to(torch.float64)
            weight = source.weight.detach().to(torch.float64)
            if per_channel:
                ints = torch.round(weight / scale[:, None]).clamp(-128, 127).to(torch.int8)
                qweight = torch._make_per_channel_quantized_tensor(ints, scale, torch.zeros_like(scale, dtype=torch.long), 0)
            else:
                ints = torch.round(weight / scale).clamp(-128, 127).to(torch.int8)
                qweight = torch._make_per_tensor_quantized_tensor(ints, float(scale), 0)
            module.set_weight_bias(qweight, None if source.bias is None else source.bias.detach().float())
    _mark(model, per_channel)
    return model


register_format(SavedFormat(
    name=FORMAT, description="float weights holding the int8 values exactly, plus int8 scales; our loader "
                             "re-applies PyTorch dynamic int8 quantization bit-exactly",
    save=save_dynamic, load=load_dynamic, plain_transformers=True,
    notes=["Plain transformers loads only the float weights (same values, no int8 speed-up or memory saving)."]))


@register("dynamic_int8", title="Dynamic int8 (CPU)", family="quantization",
          summary="Store Linear weights as int8 and quantize activations on the fly (PyTorch dynamic "
                  "quantization). No data needed; faster decoding on CPU. CPU only.",
          config=DynamicInt8Config, needs=Needs(cpu_only=True))
def apply_dynamic_int8(model, config: DynamicInt8Config, ctx):
    if ctx.device != "cpu":
        raise RecipeError(f"dynamic int8 runs on CPU only (fbgemm/x86 kernels), not on {ctx.device}: run this "
                          "step on CPU, or choose bnb_quantize for a GPU")
    if (model_format(model) is not None or getattr(model, "is_quantized", False)
            or getattr(model.config, "quantization_config", None) is not None):
        raise RecipeError("dynamic int8 needs a float model: put it after pruning steps and instead of other "
                          "quantization steps")
    if set(torch.backends.quantized.supported_engines) <= {"none"}:
        raise RecipeError("this PyTorch build has no quantized CPU engine; dynamic int8 cannot run here")
    names = [name for name, _ in select_linears(model, config.targets, config.ignore)]
    before = after = None
    if config.measure_speed:
        from core.speed import iter_measure_speed

        yield Log("Timing decoding before dynamic int8")
        before = yield from iter_measure_speed(model, ctx.tokenizer, prompt_tokens=64, new_tokens=32)
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        model.float()  # the int8 kernels take float32 activations
    quantize_dynamic_int8(model, names, config.per_channel)
    _mark(model, config.per_channel)
    rows = []
    for name, module in _quantized_modules(model):
        info = dynamic_layer_info(module)
        rows.append({"layer": name, "bits": info["bits"], "params": info["params"]})
        yield LayerStat(name, "bits", info["bits"], ctx.step_index)
    metrics = {"layers": len(rows), "quantized_weights": sum(r["params"] for r in rows)}
    notes = ["Activations are quantized per call, so no calibration data is used; the embeddings, norms and "
             "ignored layers stay float.",
             "torch 2.13 marks torch.ao.quantization deprecated (in favour of torchao); it still runs.",
             "Saved as float weights holding the int8 values plus scales: our loader restores int8 bit-exactly; "
             "plain transformers loads the float weights only (same quality, no speed-up)."]
    if dtype != torch.float32:
        notes.append(f"The model was converted from {dtype} to float32, which the int8 kernels need.")
    if config.measure_speed:
        from core.speed import iter_measure_speed

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
