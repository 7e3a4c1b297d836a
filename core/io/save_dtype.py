"""The number format the result's weights are saved in (float32, bfloat16 or float16).

``auto`` keeps the source's own format where it is known: a folder or hub model is saved as the
dtype its weights were loaded in (transformers reads it from config.json).  A GGUF file is
converted to float32 tensors on load, so ``auto`` looks at the GGUF's file type instead:
F32 → float32, F16 → float16, BF16 → bfloat16, and quantized blocks (Q4_1, Q8_0, …) → bfloat16,
because 4- or 8-bit values need far less precision than bfloat16 has, and bfloat16 has float32's
range (float16 can overflow in activations).

Only ordinary floating-point weights change.  A module that holds packed or quantized tensors
(integer buffers, bitsandbytes parameters) keeps all its tensors, scales included, exactly as
they are; non-persistent buffers (never saved) are left alone too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import torch

from core.models.gguf_header import gguf_file_type  # reads the header up to general.file_type only (fast)

SAVE_DTYPES = ("auto", "float32", "bfloat16", "float16")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_GGUF_FILE_TYPES = {0: "float32", 1: "float16", 32: "bfloat16"}  # llama.cpp LlamaFileType; others are quantized


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# -- reading a GGUF header ---------------------------------------------------------------------------
def _quantized_name(file_type: int | None) -> str:
    """"Q4_1" for llama.cpp's MOSTLY_Q4_1, and so on."""
    try:
        return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"type {file_type}" if file_type is not None else "unknown"


# -- choosing the dtype --------------------------------------------------------------------------------
def floating_dtype(model: Any) -> torch.dtype | None:
    """The dtype most of the model's floating-point parameters have (None if it has none)."""
    counts: dict[torch.dtype, int] = {}
    for p in model.parameters():
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return max(counts, key=counts.get) if counts else None


def resolve_save_dtype(choice: str, model: Any, source_kind: str = "folder",
                       source_path: str | Path | None = None) -> tuple[torch.dtype, str]:
    """The dtype to save in, and why in plain words, for the recipe's ``output.dtype`` choice."""
    if choice in _DTYPES:
        return _DTYPES[choice], "chosen in the recipe"
    if choice != "auto":
        raise ValueError(f"unknown save dtype {choice!r}; choose one of {', '.join(SAVE_DTYPES)}")
    # a bundled model may be a GGUF file (SmolLM2) or a safetensors folder (MiniLM): only a file is a GGUF
    if source_kind in ("gguf", "bundled") and source_path is not None and Path(source_path).suffix.lower() == ".gguf":
        file_type = gguf_file_type(source_path)
        name = Path(source_path).name
        if file_type in _GGUF_FILE_TYPES:
            dtype = _DTYPES[_GGUF_FILE_TYPES[file_type]]
            return dtype, f"auto: the source GGUF {name} stores {dtype_name(dtype)} weights"
        kind = _quantized_name(file_type)
        return torch.bfloat16, (f"auto: the source GGUF {name} stores quantized {kind} blocks; bfloat16 keeps "
                                "float32's range at half its size, but rounds most of the dequantized values (the "
                                "'after' measurements are of the rounded weights, so they show the effect; choose "
                                "float32 to keep every value exactly)")
    current = floating_dtype(model) or torch.float32
    return current, f"auto: the source's weights are {dtype_name(current)}"


# -- casting -----------------------------------------------------------------------------------------
def _module_is_plain(module: torch.nn.Module) -> bool:
    """False for a module with packed/quantized tensors (integers, tensor subclasses): it keeps its own."""
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    for tensor in tensors:
        if type(tensor) not in (torch.Tensor, torch.nn.Parameter) or not tensor.is_floating_point():
            return False
    return True


def _round_packed_scales(module: torch.nn.Module, dtype: torch.dtype) -> int:
    """Round a packed layer's scales to ``dtype``'s precision in place (their dtype kept): loading the saved
    folder builds its packed layers in ``dtype`` (the config's), so this is what the reloaded model computes
    with; the file keeps them in their own dtype, now exactly representable in ``dtype``."""
    scale = getattr(module, "weight_scale", None)
    if getattr(module, "weight_packed", None) is None or not isinstance(scale, torch.Tensor) \
            or not scale.is_floating_point() or torch.finfo(scale.dtype).bits <= torch.finfo(dtype).bits:
        return 0
    scale.data = scale.data.to(dtype).to(scale.dtype)
    if hasattr(module, "int4_scale_zeros"):  # a CPU kernel's copy of the old scales: rebuilt at the next call
        module.int4_weight = module.int4_scale_zeros = None
    return 1


def cast_floating_weights(model: torch.nn.Module, dtype: torch.dtype, *, keep_compute_dtype: bool = False) -> int:
    """Round or cast the model's ordinary floating-point weights to ``dtype`` in place; return how many changed.

    With ``keep_compute_dtype`` the values are rounded to ``dtype``'s precision but stay in their
    current dtype, so measuring the model afterwards measures exactly the weights that will be saved
    while computing in the same precision as before.  Shared parameters stay shared.
    """
    changed = 0
    seen: set[int] = set()
    for module in model.modules():
        if not _module_is_plain(module):
            if keep_compute_dtype:
                changed += _round_packed_scales(module, dtype)
            continue
        skip = getattr(module, "_non_persistent_buffers_set", set())
        named = [*module.named_parameters(recurse=False),
                 *((n, b) for n, b in module.named_buffers(recurse=False) if n not in skip)]
        for _, tensor in named:
            if id(tensor) in seen or not tensor.is_floating_point() or tensor.dtype == dtype:
                continue
            seen.add(id(tensor))
            rounded = tensor.data.to(dtype)
            tensor.data = rounded.to(tensor.dtype) if keep_compute_dtype else rounded
            changed += 1
    if not keep_compute_dtype and getattr(model, "config", None) is not None:
        model.config.dtype = dtype  # config.json says what the weights are, so dtype="auto" loads them so
    return changed
