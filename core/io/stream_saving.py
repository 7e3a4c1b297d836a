"""Writing a model block by block into sharded safetensors (the streamed run's output).

One shard per decoder block (written as soon as the block is finished, then the block's memory is
freed) and a last shard for everything outside the blocks, tied together by the standard
``model.safetensors.index.json`` that transformers reads.  The folder it writes into is the
temporary folder of :func:`core.io.saving.atomic_folder`, so a failure anywhere leaves nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.models.streaming import INDEX_FILE


class ShardWriter:
    """Writes ``shards`` safetensors files one call at a time, then the index that names them."""

    def __init__(self, folder: Path, shards: int, dtype: torch.dtype | None = None):
        self.folder = Path(folder)
        self.shards = shards
        self.dtype = dtype  # floating-point tensors are saved in this dtype (None: as they are)
        self.written = 0
        self.weight_map: dict[str, str] = {}
        self.total_size = 0
        self.zeros = 0  # zero values among the floating-point tensors written (pruned weights)

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write the next shard: ``tensors`` by their full names in the model."""
        if self.written >= self.shards:
            raise ValueError(f"all {self.shards} shards are written already")
        self.written += 1
        file = f"model-{self.written:05d}-of-{self.shards:05d}.safetensors"
        ready = {}
        for name, tensor in tensors.items():
            tensor = tensor.detach().to("cpu")
            if self.dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(self.dtype)
            ready[name] = tensor.contiguous()
            if tensor.is_floating_point():
                self.zeros += int((tensor == 0).sum())
            self.weight_map[name] = file
            self.total_size += tensor.numel() * tensor.element_size()
        save_file(ready, self.folder / file, metadata={"format": "pt"})

    def finish(self) -> None:
        """Write the index once every shard is written."""
        if self.written != self.shards:
            raise ValueError(f"only {self.written} of {self.shards} shards were written")
        index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")
