"""The ``sparse-bitmask`` saved format: pruned Linear weights stored so the zeros take no disk.

Zeros in a dense tensor cost as much as any other value.  Here every Linear weight for which it
is smaller is stored in the compressed-tensors "sparse-bitmask" tensor layout, under the weight's
name plus a suffix:

    <name>.compressed   1-D, the non-zero values in row-major order, in the weight's dtype
    <name>.bitmask      uint8 [rows, ceil(cols / 8)], 1 = non-zero (numpy.packbits, little bit order)
    <name>.shape        int32 [2], the dense shape
    <name>.row_offsets  int32 [rows], index in ``compressed`` of each row's first value

Every other tensor is stored as it is.  One tensor costs (1 bit + value bits × density) per weight
instead of value bits, so 50% sparsity in bfloat16 takes about 56% of the dense bytes.

Loading (:func:`load_sparse_bitmask`) rebuilds the exact dense tensors, so the reloaded model's
logits are identical.  The weights stay dense in memory: on a CPU, dense kernels do not skip
zeros, so no speed-up is expected from this format; it only saves disk and download size.

compressed-tensors 0.20 (the current release) no longer ships a sparse-bitmask decompressor and
writes an empty ``sparsity_config``, so plain ``transformers`` cannot load these folders; only this
app's loader can (``plain_transformers=False``).  config.json is written as ``save_pretrained``
would and keeps no ``quantization_config``; the sparsity description lives under
``sparsity_config`` in our manifest.  The weights file is deliberately not named
``model.safetensors``: plain transformers then refuses the folder ("no model.safetensors")
instead of loading it with every compressed Linear silently re-initialised at random.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy
import torch
from torch import nn

from core.errors import ModelLoadError
from core.models.formats import SavedFormat, mark_format, register_format
from core.models.loading import _auto_class

FORMAT = "sparse-bitmask"
WEIGHTS_FILE = "model.sparse-bitmask.safetensors"  # not model.safetensors: see the docstring
SUFFIXES = ("compressed", "bitmask", "shape", "row_offsets")


# ------------------------------------------------------------------ tensor codec (pure functions)
def compressed_bytes(weight: torch.Tensor) -> int:
    """Bytes of ``weight`` [rows, cols] in the bitmask layout (values + bitmask + shape + offsets)."""
    rows, cols = weight.shape
    nonzero = int(torch.count_nonzero(weight))
    return nonzero * weight.element_size() + rows * ((cols + 7) // 8) + 2 * 4 + rows * 4


def compress_weight(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four tensors of the bitmask layout for a 2-D ``weight`` (suffix -> tensor)."""
    if weight.dim() != 2:
        raise ValueError(f"the bitmask layout stores 2-D weights, got shape {list(weight.shape)}")
    weight = weight.detach().cpu().contiguous()
    keep = weight != 0
    row_counts = keep.sum(dim=1)
    bits = numpy.packbits(keep.numpy(), axis=-1, bitorder="little")
    return {"compressed": weight[keep].contiguous(),
            "bitmask": torch.from_numpy(bits),
            "shape": torch.tensor(list(weight.shape), dtype=torch.int32),
            "row_offsets": (torch.cumsum(row_counts, 0) - row_counts).to(torch.int32)}


def decompress_weight(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The dense tensor back from :func:`compress_weight`'s output (exact)."""
    rows, cols = (int(x) for x in parts["shape"].tolist())
    bits = numpy.unpackbits(parts["bitmask"].numpy(), axis=-1, count=cols, bitorder="little")
    keep = torch.from_numpy(bits.reshape(rows, cols).astype(bool))
    values = parts["compressed"]
    if int(keep.sum()) != values.numel():
        raise ModelLoadError(f"sparse weight damaged: the bitmask marks {int(keep.sum())} values but "
                             f"{values.numel()} are stored")
    dense = torch.zeros(rows, cols, dtype=values.dtype)
    dense[keep] = values
    return dense


# ------------------------------------------------------------------ whole models
def _unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared (tied) tensor once, under its first name."""
    seen: set[int] = set()
    state = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        state[name] = tensor
    return state


def _linear_weight_names(model: nn.Module) -> set[str]:
    return {f"{name}.weight" if name else "weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def _chosen(model: nn.Module) -> tuple[dict[str, torch.Tensor], set[str]]:
    """(unique state, names of the Linear weights that are smaller in the bitmask layout)."""
    state = _unique_state(model)
    linear = _linear_weight_names(model)
    sparse = {name for name, t in state.items()
              if name in linear and t.dim() == 2 and compressed_bytes(t) < t.numel() * t.element_size()}
    return state, sparse


def sparse_bytes_estimate(model: nn.Module) -> dict[str, int]:
    """Tensor bytes of ``model`` saved dense vs in ``sparse-bitmask`` (file headers not counted)."""
    state, sparse = _chosen(model)
    dense = sum(t.numel() * t.element_size() for t in state.values())
    packed = sum(compressed_bytes(t) if name in sparse else t.numel() * t.element_size()
                 for name, t in state.items())
    return {"dense_bytes": dense, "sparse_bytes": packed, "sparse_layers": len(sparse)}


def mark_sparse(model: nn.Module) -> None:
    """Have the next save write ``model`` in the sparse-bitmask format (see core.models.formats)."""
    mark_format(model, FORMAT, sparsity_config=_sparsity_config(model))


def _sparsity_config(model: nn.Module) -> dict[str, Any]:
    """compressed-tensors' SparsityCompressionConfig fields, for readers of the layout."""
    state, sparse = _chosen(model)
    params = sum(t.numel() for t in state.values())
    zeros = sum(t.numel() - int(torch.count_nonzero(t)) for t in state.values())
    return {"format": FORMAT, "global_sparsity": zeros / params if params else 0.0,
            "sparsity_structure": "unstructured", "targets": sorted(n.rsplit(".", 1)[0] for n in sparse),
            "ignore": []}


def save_sparse_bitmask(model: nn.Module, folder: Path) -> None:
    """Write config.json (+ generation_config.json) and one safetensors file in the bitmask layout."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state, sparse = _chosen(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name in sparse:
            for suffix, part in compress_weight(tensor).items():
                tensors[f"{name}.{suffix}"] = part
        else:
            tensors[name] = tensor.detach().cpu().contiguous()
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "compression": FORMAT})
    model.config.architectures = [type(model).__name__]  # as save_pretrained records it
    model.config.save_pretrained(folder)
    generation = getattr(model, "generation_config", None)
    if generation is not None and getattr(model, "can_generate", lambda: False)():
        generation.save_pretrained(folder)


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    """The dense state dict stored in a sparse-bitmask folder."""
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelLoadError(f"{folder} is marked sparse-bitmask but has no {WEIGHTS_FILE}")
    raw = load_file(str(path))
    state: dict[str, torch.Tensor] = {}
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in raw.items():
        base, _, suffix = key.rpartition(".")
        if suffix in SUFFIXES and base:
            grouped.setdefault(base, {})[suffix] = tensor
        else:
            state[key] = tensor
    for base, parts in grouped.items():
        if set(parts) != set(SUFFIXES):
            raise ModelLoadError(f"sparse weight {base} in {path} lacks {sorted(set(SUFFIXES) - set(parts))}")
        state[base] = decompress_weight(parts)
    return state


def load_sparse_bitmask(folder: Path, task: str) -> nn.Module:
    """Rebuild the dense model from a sparse-bitmask folder and mark it to save the same way."""
    from transformers import AutoConfig

    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    model = _auto_class(task).from_config(config)
    state = read_state(folder)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise ModelLoadError(f"{folder} holds weights this architecture does not have: "
                             f"{', '.join(result.unexpected_keys[:5])}")
    model.tie_weights()
    stored = {t.data_ptr() for t in state.values()}
    current = model.state_dict()
    untied = [k for k in result.missing_keys if current[k].data_ptr() not in stored]
    if untied:
        raise ModelLoadError(f"{folder} lacks the weights {', '.join(untied[:5])}; the folder is incomplete")
    model.eval()
    manifest = json.loads((folder / "compression_studio.json").read_text(encoding="utf-8"))
    mark_format(model, FORMAT, sparsity_config=manifest.get("sparsity_config", {}))
    return model


SPARSE_BITMASK = register_format(SavedFormat(
    name=FORMAT,
    description="Pruned Linear weights stored as a bitmask of non-zeros plus the non-zero values "
                "(compressed-tensors sparse-bitmask layout); other tensors as they are.",
    save=save_sparse_bitmask,
    load=load_sparse_bitmask,
    plain_transformers=False,
    replaceable=True,
    notes=["Smaller on disk only: the loaded model is dense again, and dense CPU kernels do not skip "
           "zeros, so expect no speed-up on a CPU.",
           "Loads in this app; plain transformers with compressed-tensors 0.20 cannot decompress "
           "sparse-bitmask weights."]))


SAVE_FORMATS = ("dense", "sparse")
SAVE_FORMAT_HELP = ("dense: a folder plain transformers loads (zeros take full space). sparse: pruned layers "
                    "stored as a bitmask plus the non-zero values, really smaller on disk; loads in this app "
                    "only, and runs no faster on a CPU.")


def apply_save_format(model: nn.Module, save_format: str, report: Any) -> Any:
    """Add dense vs sparse bytes to a pruning step's report and mark the model if it is to be saved sparse."""
    estimate = sparse_bytes_estimate(model)
    report.metrics["dense_bytes"] = estimate["dense_bytes"]
    report.metrics["sparse_bytes"] = estimate["sparse_bytes"]
    share = estimate["sparse_bytes"] / estimate["dense_bytes"] if estimate["dense_bytes"] else 1.0
    if save_format == "sparse":
        mark_sparse(model)
        report.notes.append(f"Saved in the sparse-bitmask format: about {share:.0%} of the dense bytes. "
                            "It loads in this app; plain transformers cannot read it.")
    else:
        report.notes.append(f"Saved dense, so plain transformers loads it; the sparse format would take about "
                            f"{share:.0%} of the bytes (choose save_format: sparse).")
    return report
