"""Models bigger than memory: the skeleton on the meta device, one decoder block's weights at a time.

:func:`open_streamed` builds the model from its ``config.json`` with every parameter on PyTorch's
"meta" device (buffers such as the rotary frequencies are real: they are computed, not stored), then
reads from the folder's safetensors files only the weights outside the repeated blocks (embedding,
final norm, output head).  A block's weights are read tensor by tensor (``safe_open``; nothing else of
the file is touched) when the calibration engine brings that block in (:meth:`BlockStream.onload`) and
dropped back to meta when it is done (:meth:`BlockStream.offload`), after an optional callback has
seen them (the streamed run writes each finished block to the output there).  Peak memory is the
resident modules, one block and the hidden states, whatever the depth.

The calibration engine finds the stream on the model (:func:`block_stream`), so every block-wise
technique that goes through it streams without knowing.  Anything that runs the whole model at once
(a plain forward, ``save_pretrained``) would meet meta tensors: the streamed run refuses those steps
up front (:mod:`core.engine.streamed`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from torch import nn

from core.errors import ModelLoadError

STREAM_ATTRIBUTE = "_studio_block_stream"
INDEX_FILE = "model.safetensors.index.json"


def weight_map(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file that holds it (sharded folders through their index)."""
    index = folder / INDEX_FILE
    if index.is_file():
        names = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: folder / file for name, file in names.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        raise ModelLoadError(f"{folder} has no safetensors weights (model.safetensors or {INDEX_FILE}); streaming "
                             "reads only safetensors folders")
    with safe_open(single, framework="pt") as handle:
        return dict.fromkeys(handle.keys(), single)


class SafetensorsReader:
    """Per-tensor reads from a folder's safetensors files (each read copies one tensor, nothing more)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.files = weight_map(self.folder)
        self._handles: dict[Path, Any] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def read(self, name: str) -> torch.Tensor:
        """The tensor ``name``, in memory of its own.

        ``get_tensor`` gives a view of the file's private memory map: changing it in place (pruning masks
        it) would turn those pages into anonymous copies that live as long as the map, one block's worth
        more for every block.  A copy is freed with the block; the file's pages stay the kernel's to drop.
        """
        file = self.files[name]
        if file not in self._handles:
            self._handles[file] = safe_open(file, framework="pt")
        return self._handles[file].get_tensor(name).clone()

    def close(self) -> None:
        self._handles.clear()


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, leaf = name.rpartition(".")
    return (root.get_submodule(owner) if owner else root), leaf


def _put(root: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module, leaf = _owner(root, name)
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[leaf] = tensor


def _zeros(tensors) -> int:
    """Zero values among the floating-point tensors that hold storage (each counted once)."""
    unique = {id(t): t for t in tensors if t.device.type != "meta" and t.is_floating_point()}
    return sum(int((t == 0).sum()) for t in unique.values())


def resident_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers that hold real storage (not meta), each counted once."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type != "meta" and id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


class BlockStream:
    """Brings one block's weights in from the files and drops them again; tracks the peak resident bytes."""

    def __init__(self, model: nn.Module, reader: SafetensorsReader, blocks_name: str):
        self.model = model
        self.reader = reader
        self.blocks_name = blocks_name
        self.on_offload: Callable[[str, nn.Module], None] | None = None  # sees a finished block's weights
        self.peak_resident_bytes = resident_bytes(model)
        self.loads = 0
        self.zeros: dict[str, int] = {"": _zeros(model.state_dict(keep_vars=True).values())}  # block -> zeros read
        # floating tensors are read in the resident weights' dtype (a result saved in another dtype is
        # measured with its rounded values, in the dtype the model computes in)
        self.compute_dtype = next((p.dtype for p in model.parameters()
                                   if p.device.type != "meta" and p.is_floating_point()), None)

    def set_reader(self, reader: SafetensorsReader) -> None:
        """Read the blocks from another folder from now on (the previous step's output)."""
        self.reader.close()
        self.reader = reader

    def onload(self, block_name: str, block: nn.Module, device: torch.device | str) -> None:
        """Read every tensor of ``block`` (named ``block_name`` in the model) from the files onto ``device``."""
        # buffers still empty now (e.g. a packed layer's kernel layout) are caches the block may build: dropped later
        self._empty = [(module, key) for module in block.modules() for key, value in module._buffers.items()
                       if value is None]
        for local in block.state_dict(keep_vars=True):
            full = f"{block_name}.{local}"
            if full not in self.reader:
                raise ModelLoadError(f"{self.reader.folder} lacks {full}; the weight files do not match config.json")
            tensor = self.reader.read(full)
            if self.compute_dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(self.compute_dtype)
            _put(block, local, tensor.to(device))
        self.loads += 1
        self.zeros[block_name] = _zeros(block.state_dict(keep_vars=True).values())
        self.peak_resident_bytes = max(self.peak_resident_bytes, resident_bytes(self.model))

    def offload(self, block_name: str, block: nn.Module) -> None:
        """Hand the finished block to ``on_offload`` (e.g. to be written), then put its tensors back on meta."""
        self.peak_resident_bytes = max(self.peak_resident_bytes, resident_bytes(self.model))
        if self.on_offload is not None:
            self.on_offload(block_name, block)
        for local, tensor in block.state_dict(keep_vars=True).items():
            _put(block, local, torch.empty_like(tensor, device="meta"))
        for module, key in getattr(self, "_empty", []):
            module._buffers[key] = None
        self._empty = []


def block_stream(model: nn.Module) -> BlockStream | None:
    """The stream a model was opened with by :func:`open_streamed`, or None for an ordinary model."""
    return getattr(model, STREAM_ATTRIBUTE, None)


def open_streamed(folder: Path, blocks_name: Callable[[nn.Module], str], device: torch.device | str = "cpu",
                  task_class: Any = None) -> nn.Module:
    """The model of a safetensors ``folder`` with only its non-block weights in memory (see the module doc).

    ``blocks_name(skeleton)`` names the repeated blocks (the calibration engine's ``find_blocks``);
    ``task_class`` is the transformers auto class (causal LM by default).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)  # never trust_remote_code: streaming is for stock families
    reader = SafetensorsReader(folder)
    with init_empty_weights(include_buffers=False):  # parameters on meta, computed buffers real
        model = (task_class or AutoModelForCausalLM).from_config(config)
    model.eval()
    model.requires_grad_(False)
    blocks = blocks_name(model)
    missing = []
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name.startswith(blocks + ".") or tensor.device.type != "meta":
            continue
        if name in reader:
            _put(model, name, reader.read(name).to(device))
        else:
            missing.append(name)
    if missing and getattr(config, "tie_word_embeddings", False):
        model.tie_weights()  # the head shares the embedding's (now loaded) weight
        missing = [n for n in missing if model.get_parameter(n).device.type == "meta"]
    if missing:
        raise ModelLoadError(f"{folder} lacks {missing[0]}; the weight files do not match config.json")
    for module in model.modules():  # computed buffers (rotary frequencies) go where the weights are
        for key, value in module._buffers.items():
            if value is not None and value.device.type != "meta":
                module._buffers[key] = value.to(device)
    setattr(model, STREAM_ATTRIBUTE, BlockStream(model, reader, blocks))
    return model
