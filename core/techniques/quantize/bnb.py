"""bitsandbytes quantization: LLM.int8 (8-bit) and 4-bit NF4 / FP4, as ``BitsAndBytesConfig`` sets them.

transformers quantizes with bitsandbytes while it loads weights, so the handler writes the current
model to a temporary folder, loads it back with a ``BitsAndBytesConfig`` and moves the quantized
modules into the model it was given (the runner keeps that object).  The result saves with
``save_pretrained`` and loads again with plain ``AutoModelForCausalLM.from_pretrained(folder)``
(bitsandbytes must be installed there too).

CPU: bitsandbytes >= 0.48 runs every mode here on CPU; older releases need an NVIDIA GPU, and the
config is rejected up front on a machine without one.  bitsandbytes 0.50 repacks a 4-bit layer's
weights for AVX512-BF16 at its first CPU forward and does not undo the repacking exactly when the
model is saved (the block scales stay bfloat16 and transposed), so a folder saved after any
forward would reload with different weights.  This step switches that repacking off on the
layers it creates, and our loader switches it off when it reloads such a folder: saved, in-memory
and reloaded models then give the same logits.  Plain transformers repacks on reload (logits within
about 0.02 on the tiny test model; 0.7 of a logit at most on SmolLM2, 0.07% in perplexity).
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from dataclasses import dataclass

import torch

from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.errors import RecipeError
from core.events import LayerStat, Log
from core.models.formats import model_format, register_load_fix

MODES = ("int8", "nf4", "fp4")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
MIN_CPU_VERSION = (0, 48)


def cpu_support_problem(version: str, has_cuda: bool) -> str | None:
    """Why this bitsandbytes release cannot quantize on this machine (no GPU and no CPU backend), or None."""
    try:
        parts = tuple(int(p) for p in version.split("+")[0].split(".")[:2])
    except ValueError:
        return None
    if has_cuda or parts >= MIN_CPU_VERSION:
        return None
    return (f"bitsandbytes {version} quantizes only on an NVIDIA GPU and this machine has none: install "
            f"bitsandbytes>={'.'.join(map(str, MIN_CPU_VERSION))} (it runs int8, nf4 and fp4 on CPU), or choose "
            "'dynamic_int8' for CPU inference")


@dataclass
class BnbQuantizeConfig:
    mode: str = param("nf4", "int8: LLM.int8 (8-bit weights, outlier features kept in 16-bit). nf4: 4-bit "
                      "NormalFloat, best 4-bit quality for normally distributed weights. fp4: 4-bit float.",
                      choices=MODES, label="Format")
    double_quant: bool = param(False, "4-bit only: quantize the per-block scales too (saves about 0.4 bit "
                               "per weight, costs a little accuracy).",
                               label="Compress the scales too (double quant)", expert=True)
    int8_threshold: float = param(6.0, "int8 only: input values larger than this stay in 16-bit (LLM.int8's "
                                  "outlier decomposition; bitsandbytes' default 6.0). Lower keeps more columns in "
                                  "16-bit: better quality, slower. On SmolLM2-135M (8 windows) 6.0 gave +2.5% "
                                  "perplexity over float, 4.0 +1.5%, 2.0 +1.0%.", minimum=0.0, exclusive_minimum=True,
                                  label="Outlier threshold (int8)", expert=True)
    compute_dtype: str = param("float32", "4-bit only: the dtype the matrix products run in after the weights "
                               "are dequantized. bfloat16/float16 are faster on GPUs, float32 is the exact "
                               "choice on CPU.", choices=COMPUTE_DTYPES,
                               label="Number format for computing", expert=True)

    def validate(self) -> None:
        """Reject combinations that mean nothing, and releases that cannot run on this machine."""
        if self.mode != "int8" and self.int8_threshold != 6.0:
            raise RecipeError("int8_threshold applies to mode int8 only: choose mode int8, or leave it at 6.0")
        if self.mode == "int8" and self.double_quant:
            raise RecipeError("double quantization applies to the 4-bit modes: choose mode nf4 or fp4, "
                              "or turn double_quant off for int8")
        try:
            version = importlib.metadata.version("bitsandbytes")
        except importlib.metadata.PackageNotFoundError:
            return  # unavailable_reason says the package is missing
        problem = cpu_support_problem(version, torch.cuda.is_available())
        if problem:
            raise RecipeError(problem)


def bnb_config(config: BnbQuantizeConfig):
    """The ``transformers.BitsAndBytesConfig`` for this step's settings."""
    from transformers import BitsAndBytesConfig

    if config.mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=config.int8_threshold)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=config.mode,
                              bnb_4bit_use_double_quant=config.double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, config.compute_dtype))


def _nbytes(tensor) -> int:
    return tensor.numel() * tensor.element_size() if isinstance(tensor, torch.Tensor) else 0


def bnb_layer_info(module) -> dict | None:
    """Logical weight count and storage bits per weight of a bitsandbytes Linear (scales and bias included).

    None for a bitsandbytes module that is not a quantized Linear (the layer table then counts its
    tensors as usual).  The model-inspection table calls this for every bitsandbytes layer, also in a
    folder reloaded by plain transformers.
    """
    import bitsandbytes as bnb

    if not isinstance(module, bnb.nn.Linear4bit | bnb.nn.Linear8bitLt):
        return None
    params = module.in_features * module.out_features
    bias = getattr(module, "bias", None)
    if bias is not None:
        params += bias.numel()
    weight = module.weight
    storage = _nbytes(weight)
    state = getattr(weight, "quant_state", None)
    if state is not None:  # 4-bit: packed nibbles + per-block absmax (+ the scales of the scales)
        storage += _nbytes(state.absmax)
        if getattr(state, "state2", None) is not None:
            storage += _nbytes(state.state2.absmax)
    # int8: one float scale per output row; bitsandbytes moves it from the weight to the module's
    # state at the first forward pass
    scales = getattr(weight, "SCB", None)
    storage += _nbytes(scales if scales is not None else getattr(getattr(module, "state", None), "SCB", None))
    storage += _nbytes(bias)
    return {"params": params, "bits": storage * 8 / params, "shape": [module.out_features, module.in_features],
            "dtype": "int8" if state is None else "uint8 (4-bit packed)"}


def keep_exact_cpu_layout(model) -> None:
    """Switch off bitsandbytes' AVX512-BF16 repacking of 4-bit layers (see the module docstring).

    Done on the layers this step creates (so saving stays exact) and on a saved folder's layers when
    our loader reloads it (so the reloaded model computes exactly as the one that was saved).
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


register_load_fix("bitsandbytes", keep_exact_cpu_layout)  # our loader calls it on every reloaded bnb folder


def _transplant(model, quantized) -> None:
    """Make ``model`` the quantized model: same object, quantized modules and transformers' markers."""
    for name, child in list(quantized.named_children()):
        setattr(model, name, child)
    model.config.quantization_config = quantized.config.quantization_config
    for attribute in ("hf_quantizer", "is_quantized", "quantization_method", "is_loaded_in_8bit",
                      "is_loaded_in_4bit"):
        if hasattr(quantized, attribute):
            setattr(model, attribute, getattr(quantized, attribute))


@register("bnb_quantize", title="bitsandbytes (int8 / NF4 / FP4)", family="quantization",
          summary="Round weights to 8-bit (LLM.int8) or 4-bit (NF4/FP4) with bitsandbytes, as transformers' "
                  "BitsAndBytesConfig does. Data-free; the folder reloads in plain transformers.",
          config=BnbQuantizeConfig, needs=Needs(packages=("bitsandbytes",)))
def apply_bnb_quantize(model, config: BnbQuantizeConfig, ctx):
    import bitsandbytes as bnb
    from transformers.utils import logging as hf_logging

    if (model_format(model) is not None or getattr(model, "is_quantized", False)
            or getattr(model.config, "quantization_config", None) is not None):
        raise RecipeError("bitsandbytes quantization needs a plain float model: put it before any other "
                          "quantization or format-changing step")
    yield Log(f"Quantizing with bitsandbytes {bnb.__version__} ({config.mode})")
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="bnb-") as folder:
        model.save_pretrained(folder)
        quantized = type(model).from_pretrained(folder, quantization_config=bnb_config(config),
                                                device_map={"": ctx.device}, dtype=model.dtype)
    _transplant(model, quantized)
    del quantized
    keep_exact_cpu_layout(model)
    rows, total_params, total_bits = [], 0, 0.0
    for name, module in model.named_modules():
        if not isinstance(module, bnb.nn.Linear4bit | bnb.nn.Linear8bitLt):
            continue
        info = bnb_layer_info(module)
        rows.append({"layer": name, "bits": info["bits"], "params": info["params"]})
        total_params, total_bits = total_params + info["params"], total_bits + info["bits"] * info["params"]
        yield LayerStat(name, "bits", info["bits"], ctx.step_index)
    if not rows:
        raise RecipeError("bitsandbytes found no Linear layer to quantize in this model")
    bits = total_bits / total_params
    embedding = model.get_input_embeddings()
    embedding_params = embedding.weight.numel() if embedding is not None else 0
    share = embedding_params / max(1, sum(p.numel() for p in model.parameters()))
    notes = ["The embeddings, norms and output head stay in full precision (transformers' default for "
             "bitsandbytes); bits per weight count only the quantized Linear layers, scales included.",
             f"The token embedding ({embedding_params:,} weights, {share:.0%} of this model's) cannot be quantized "
             "here: transformers' bitsandbytes integration replaces only Linear layers and its saved folders have "
             "no place for bitsandbytes' 4-bit embedding, so a folder with one would not reload. To shrink it, use "
             "RTN or GPTQ (their quantize_embedding option) or GGUF export.",
             "The saved folder loads with plain transformers (AutoModelForCausalLM.from_pretrained) where "
             "bitsandbytes is installed; it cannot be loaded without bitsandbytes."]
    if config.mode == "int8":
        notes.append("LLM.int8 on CPU casts activations to float16 for its matrix products; compute_dtype "
                     "applies to the 4-bit modes only and was ignored.")
    elif ctx.device == "cpu":
        notes.append("bitsandbytes' AVX512-BF16 repacking of 4-bit weights is switched off on these layers, "
                     "because bitsandbytes 0.50 does not undo it exactly on save; CPU speed may be lower.")
    return StepReport(summary=f"Quantized {len(rows)} Linear layers with bitsandbytes {config.mode} "
                              f"({bits:.2f} bits per weight).",
                      metrics={"bits_per_weight": bits, "quantized_weights": total_params, "layers": len(rows),
                               "embedding_quantized": 0.0, "embedding_params": embedding_params},
                      layers=rows, notes=notes)
