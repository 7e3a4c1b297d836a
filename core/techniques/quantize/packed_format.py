"""The saved format of RTN/GPTQ models: compressed-tensors "pack-quantized".

The folder is an ordinary transformers folder whose safetensors hold, for every packed Linear,
``weight_packed`` / ``weight_scale`` / ``weight_shape`` (+ ``weight_zero_point`` if asymmetric)
exactly as compressed-tensors lays them out, and whose ``config.json`` carries the matching
``quantization_config`` (quant_method "compressed-tensors", format "pack-quantized", one config
group per (bits, group size, symmetry) whose targets are the exact layer names).  So:

- our loader rebuilds the model with :class:`PackedLinear` modules (memory stays packed);
- plain ``transformers`` loads it too when the ``compressed-tensors`` package is installed
  (it decompresses to dense weights in memory); vLLM reads the same layout (its WNA16 scheme: format
  "pack-quantized", int weights of 4 or 8 bits, strategy "group"/"channel", no activation quantization).
  Asymmetric folders are the same layout, zero points packed along rows as compressed-tensors packs them
  and vLLM reads them; transformers (5.25, compressed-tensors 0.20.1) builds its compressed skeleton with
  an unpacked zero point and refuses the shapes, but asked to dequantize at load time it unpacks them with
  compressed-tensors' decompressor, so their ``quantization_config`` carries ``"dequantize": true`` (a
  transformers loading option, ignored by vLLM).  They keep a second format name (older folders lack the key).
  A packed token embedding (:mod:`.packed_embedding`; the embedding is listed among a config group's
  targets, a tied head among ``ignore``) is not read by transformers either: a third name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
from torch import nn

from core.errors import ModelLoadError
from core.models.formats import SavedFormat, mark_format, register_format
from core.models.loading import _auto_class
from core.models.module_swap import replace_module
from core.techniques.quantize.common import ASYMMETRIC_FORMAT_NAME, EMBEDDING_FORMAT_NAME, FORMAT_NAME
from core.techniques.quantize.packed_embedding import PackedEmbedding, TiedPackedHead
from core.techniques.quantize.packed_linear import PackedLinear


def format_name(model: nn.Module) -> str:
    """The saved format for a model's packed layers: the embedding variant if the token embedding is packed,
    else the asymmetric variant if any layer has zero points."""
    if any(isinstance(m, PackedEmbedding) for m in model.modules()):
        return EMBEDDING_FORMAT_NAME
    asymmetric = any(isinstance(m, PackedLinear) and not m.symmetric for m in model.modules())
    return ASYMMETRIC_FORMAT_NAME if asymmetric else FORMAT_NAME


def mark_quantized(model: nn.Module) -> None:
    """Mark the model to be saved in the packed compressed-tensors format."""
    mark_format(model, format_name(model))

def quantization_config(model: nn.Module) -> dict:
    """The compressed-tensors ``quantization_config`` describing the model's PackedLinear layers.

    Built with compressed-tensors' own models, so the folder says exactly what that library (and
    transformers or vLLM through it) expects of a pack-quantized checkpoint.
    """
    groups: dict[tuple, list[str]] = {}
    ignore = []
    for name, module in model.named_modules():
        if isinstance(module, PackedLinear):  # a PackedEmbedding too: the same buffers, looked up by row
            groups.setdefault((module.bits, module.group_size, module.symmetric), []).append(name)
        elif isinstance(module, nn.Linear | TiedPackedHead):  # a tied head is stored as the embedding
            ignore.append(name)
    schemes = {}
    for index, ((bits, group_size, symmetric), names) in enumerate(groups.items()):
        weights = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric,
                                   strategy="group" if group_size else "channel", group_size=group_size or None)
        schemes[f"group_{index}"] = QuantizationScheme(targets=names, weights=weights, format="pack-quantized")
    config = QuantizationConfig(config_groups=schemes, format="pack-quantized", quantization_status="compressed",
                                ignore=ignore).model_dump(mode="json")
    if any(not symmetric for _bits, _group, symmetric in groups):
        config["dequantize"] = True  # transformers unpacks the packed zero points only on this path
    return config


def save_packed(model: nn.Module, folder: Path) -> None:
    """Write the folder: safetensors of the packed buffers, config.json with the quantization_config."""
    model.save_pretrained(folder)
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["quantization_config"] = quantization_config(model)
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder} has no .safetensors weights; the quantized model folder is incomplete")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(str(file)))
    return tensors


def _tied_head(model: nn.Module) -> str | None:
    """The name of the output head if the freshly built model ties it to the input embedding."""
    from core.techniques.quantize.embedding import input_embedding, tied_head_name

    found = input_embedding(model)
    return tied_head_name(model, found[1]) if found else None


def load_packed(folder: Path, task: str):
    """Rebuild the model with PackedLinear layers from a pack-quantized folder (our loader's path)."""
    from transformers import AutoConfig

    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    quant = raw.get("quantization_config") or {}
    if quant.get("format") != "pack-quantized":
        raise ModelLoadError(f"{folder} is not a pack-quantized folder (its quantization_config says "
                             f"{quant.get('format')!r})")
    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # build the plain architecture; we swap the layers ourselves
    dtype = getattr(config, "dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = _auto_class(task).from_config(config, dtype=dtype)
    head = _tied_head(model)
    for group in quant.get("config_groups", {}).values():
        weights = group["weights"]
        for name in group["targets"]:
            module = model.get_submodule(name)
            scheme = (weights["num_bits"], weights.get("group_size") or 0, weights["symmetric"])
            if isinstance(module, nn.Embedding):
                packed = PackedEmbedding(module.num_embeddings, module.embedding_dim, *scheme,
                                         dtype=module.weight.dtype, padding_idx=module.padding_idx)
                replace_module(model, name, packed)
                if head is not None and model.get_input_embeddings() is packed:
                    replace_module(model, head, TiedPackedHead(packed))
                continue
            packed = PackedLinear(module.in_features, module.out_features, *scheme,
                                  bias=module.bias is not None, dtype=module.weight.dtype)
            replace_module(model, name, packed)
    tensors = _read_tensors(folder)
    result = model.load_state_dict(tensors, strict=False)
    loaded = {p.data_ptr() for n, p in model.named_parameters() if n in tensors}
    missing = [k for k in result.missing_keys if model.get_parameter(k).data_ptr() not in loaded] \
        if result.missing_keys else []
    if missing or result.unexpected_keys:
        raise ModelLoadError(f"{folder} does not match its config: missing {missing[:5]}, "
                             f"unexpected {result.unexpected_keys[:5]}")
    model.eval()
    mark_format(model, format_name(model))
    return model


register_format(SavedFormat(
    name=FORMAT_NAME,
    description="Weights packed to 2–8 bits with per-group scales (compressed-tensors 'pack-quantized').",
    save=save_packed, load=load_packed, plain_transformers=True,
    notes=["Plain transformers loads this folder only with the 'compressed-tensors' package installed, "
           "and then holds dense (decompressed) weights in memory; this app keeps them packed."]))
register_format(SavedFormat(
    name=ASYMMETRIC_FORMAT_NAME,
    description="Weights packed to 2–8 bits with per-group scales and zero points "
                "(compressed-tensors 'pack-quantized', asymmetric).",
    save=save_packed, load=load_packed, plain_transformers=True,
    notes=["Plain transformers loads this folder with the 'compressed-tensors' package installed, dequantizing "
           "at load time (its config asks so: transformers' compressed skeleton refuses packed zero points); "
           "vLLM reads it packed. A folder saved before that key: from_pretrained(folder, "
           "quantization_config=CompressedTensorsConfig(dequantize=True))."]))
register_format(SavedFormat(
    name=EMBEDDING_FORMAT_NAME,
    description="Weights and the token embedding packed to 2–8 bits with per-group scales "
                "(compressed-tensors 'pack-quantized' layout; a tied output head shares the embedding's codes).",
    save=save_packed, load=load_packed, plain_transformers=False,
    notes=["Load this folder with this app: transformers 5.25 with compressed-tensors 0.20 builds a plain "
           "embedding and fails on the packed one ('Embedding' object has no attribute 'weight'). Quantize "
           "with quantize_embedding off for a folder plain transformers reads."]))
