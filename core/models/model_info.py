"""Inspecting a model: what it is, how big it is (three honest ways), and a per-layer table.

Sizes:
- parameters: logical weights (tied tensors counted once), and how many of them are non-zero;
- bytes in memory: the storage of every parameter and buffer as loaded (shared tensors once);
- bytes on disk: the weight files of a saved folder or the source file, measured with ``stat``.

- bytes as a 16-bit model: what the weights would take saved as a bfloat16 (or float16) transformers model,
  every ordinary floating-point parameter and saved buffer at 2 bytes, anything kept in another format
  (integers, packed layers, their scales) at its own size, shared tensors once.  A GGUF source is loaded
  dequantized, and a result from it is saved as bfloat16 by default, so this, not the small GGUF file,
  is the size such a result is compared with.

Effective bits per weight = bytes in memory × 8 / parameters, and as stored on disk = bytes of the
weight files × 8 / parameters: a 4-bit GGUF file is loaded as float32, so it takes about 5.9 bits per
weight on disk (scales included) and 32 in memory.  A technique that stores weights
packed (e.g. 4-bit) exposes ``compression_info()`` on its module returning
``{"params": logical weight count, "bits": storage bits per weight}`` so the table stays honest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.models.gguf_header import gguf_storage

WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


@dataclass
class LayerRow:
    name: str
    kind: str
    shape: list[int]
    dtype: str
    params: int
    nonzero: int
    sparsity: float
    bits: float


@dataclass
class ModelSummary:
    architecture: str
    model_type: str
    num_layers: int | None
    hidden_size: int | None
    vocab_size: int | None
    parameters: int
    nonzero_parameters: int
    bytes_in_memory: int
    bytes_on_disk: int | None
    bits_per_weight: float
    dtype: str
    layers: list[LayerRow] = field(default_factory=list)
    bytes_as_16bit: int | None = None  # the weights saved as a 16-bit (bfloat16) model: see bytes_as_16bit()
    stored_format: str | None = None  # how a GGUF source stores its weights, in words: '4-bit GGUF Q4_1'
    stored_bits: int | None = None  # the bits per weight that format stands for (4 for Q4_1), if known

    @property
    def bits_on_disk(self) -> float | None:
        """Bits per weight as stored in the weight files (bytes on disk × 8 ÷ parameters; scales, metadata
        and anything else in the files included), or None without a file."""
        if not self.bytes_on_disk or not self.parameters:
            return None
        return self.bytes_on_disk * 8 / self.parameters

    @property
    def sparsity(self) -> float:
        return 1 - self.nonzero_parameters / self.parameters if self.parameters else 0.0

    def to_dict(self, with_layers: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["sparsity"] = self.sparsity
        if not with_layers:
            data.pop("layers")
        return data


def _unique_tensors(module: nn.Module, recurse: bool = True) -> list[torch.Tensor]:
    seen: set[int] = set()
    tensors = []
    for tensor in list(module.parameters(recurse=recurse)) + list(module.buffers(recurse=recurse)):
        key = tensor.data_ptr() if tensor.device.type != "meta" else id(tensor)
        if key in seen or tensor.numel() == 0:
            continue
        seen.add(key)
        tensors.append(tensor)
    return tensors


def bytes_in_memory(model: nn.Module) -> int:
    """Bytes of all parameters and buffers, each shared tensor counted once."""
    return sum(t.numel() * t.element_size() for t in _unique_tensors(model))


def _is_plain(module: nn.Module) -> bool:
    """Whether every own tensor of ``module`` is an ordinary floating-point tensor (what a 16-bit save casts);
    a module with packed or quantized tensors keeps all of them as they are (see core.io.save_dtype)."""
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return all(type(t) in (torch.Tensor, nn.Parameter) and t.is_floating_point() for t in tensors)


def bytes_as_16bit(model: nn.Module) -> int:
    """Bytes of the weights saved as a 16-bit (bfloat16) model: every saved tensor (parameters and persistent
    buffers, shared ones once) of an ordinary floating-point module at 2 bytes per value, the tensors of a
    module that stores them packed or quantized at their own size.  The file adds only its small header."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        plain = _is_plain(module)
        skip = getattr(module, "_non_persistent_buffers_set", set())
        saved = [*module.parameters(recurse=False),
                 *(b for name, b in module.named_buffers(recurse=False) if name not in skip)]
        for tensor in saved:
            key = tensor.data_ptr() if tensor.device.type != "meta" else id(tensor)
            if key in seen or tensor.numel() == 0:
                continue
            seen.add(key)
            total += tensor.numel() * (2 if plain and tensor.is_floating_point() else tensor.element_size())
    return total


def stored_sizes(model: nn.Module, on_disk: str | Path | None) -> dict[str, Any]:
    """The model's size as a 16-bit model, and how its GGUF source (if ``on_disk`` is one) stores the weights:
    ``{"bytes_as_16bit": …, "stored_format": '4-bit GGUF Q4_1' or None, "stored_bits": 4 or None}``."""
    is_gguf = on_disk is not None and Path(on_disk).suffix.lower() == ".gguf"
    storage = gguf_storage(on_disk) if is_gguf else None
    words = storage.words if storage is not None else ("GGUF" if is_gguf else None)  # a header that does not say
    return {"bytes_as_16bit": bytes_as_16bit(model), "stored_format": words,
            "stored_bits": storage.bits if storage is not None else None}


def folder_weight_bytes(path: str | Path) -> int:
    """Bytes of the weight files in a folder (or of a single weights file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_FILE_SUFFIXES)


def _count_nonzero(tensor: torch.Tensor) -> int:
    return int(torch.count_nonzero(tensor.detach()).item()) if tensor.device.type != "meta" else tensor.numel()


# Layers of other libraries that store weights packed, and the function of ours that describes them
# (imported only when such a layer is met): class module prefix -> "module:function".
FOREIGN_LAYER_INFO = {"bitsandbytes.": "core.techniques.quantize.bnb:bnb_layer_info"}


def _compression_info(module: nn.Module):
    """The module's own ``compression_info``, or the describing function for a known library layer."""
    info = getattr(module, "compression_info", None)
    if callable(info):
        return info
    for prefix, target in FOREIGN_LAYER_INFO.items():
        if type(module).__module__.startswith(prefix):
            import importlib

            module_name, _, function = target.partition(":")
            describe = getattr(importlib.import_module(module_name), function)
            if describe(module) is not None:
                return lambda: describe(module)
    return None


def layer_rows(model: nn.Module) -> list[LayerRow]:
    """One row per module that directly owns weights (Linear, Embedding, norms, packed layers)."""
    rows = []
    seen: set[int] = set()
    reported: list[str] = []  # modules that describe themselves, children included
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in reported):
            continue
        info = _compression_info(module)
        if info is not None:
            reported.append(name)
            details = info()
            weight = getattr(module, "weight", None)
            rows.append(LayerRow(name, type(module).__name__, list(details.get("shape", [])),
                                 str(details.get("dtype", "")), int(details["params"]),
                                 int(details.get("nonzero", details["params"])),
                                 float(details.get("sparsity", 0.0)), float(details["bits"])))
            if weight is not None:
                seen.add(weight.data_ptr())
            continue
        own = [t for t in _unique_tensors(module, recurse=False) if t.data_ptr() not in seen]
        params = [p for p in module.parameters(recurse=False) if p.data_ptr() not in seen]
        if not params:
            continue
        seen.update(t.data_ptr() for t in own)
        main = getattr(module, "weight", None)
        main = main if isinstance(main, torch.Tensor) and main.data_ptr() in {p.data_ptr() for p in params} else params[0]
        count = sum(p.numel() for p in params)
        nonzero = sum(_count_nonzero(p) for p in params)
        storage = sum(t.numel() * t.element_size() for t in own)
        rows.append(LayerRow(name, type(module).__name__, list(main.shape), str(main.dtype).replace("torch.", ""),
                             count, nonzero, 1 - nonzero / count if count else 0.0, storage * 8 / count))
    return rows


def inspect_model(model: nn.Module, on_disk: str | Path | None = None, with_layers: bool = True) -> ModelSummary:
    """Summarise a loaded model; ``on_disk`` is its saved folder or source file, if any."""
    rows = layer_rows(model)
    config = getattr(model, "config", None)
    params = sum(r.params for r in rows)
    nonzero = sum(r.nonzero for r in rows)
    memory = bytes_in_memory(model)
    dtypes = sorted({r.dtype for r in rows if r.dtype}, key=lambda d: -sum(r.params for r in rows if r.dtype == d))
    return ModelSummary(
        architecture=type(model).__name__,
        model_type=getattr(config, "model_type", "unknown"),
        num_layers=getattr(config, "num_hidden_layers", None),
        hidden_size=getattr(config, "hidden_size", None),
        vocab_size=getattr(config, "vocab_size", None),
        parameters=params, nonzero_parameters=nonzero, bytes_in_memory=memory,
        bytes_on_disk=folder_weight_bytes(on_disk) if on_disk else None,
        bits_per_weight=memory * 8 / params if params else 0.0,
        dtype=dtypes[0] if dtypes else "",
        layers=rows if with_layers else [],
        **stored_sizes(model, on_disk))


def human_bytes(count: float | None) -> str:
    """1536 -> '1.5 KB' (powers of 1000, as file managers show sizes)."""
    if count is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
