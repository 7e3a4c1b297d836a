"""Data-parallel training on several processes (``torchrun`` / ``accelerate launch``), for every training step.

Under a process group of N processes (:mod:`core.engine.distributed`), every process builds the same
micro-batch m of the run (``batch_at(m)`` is a pure function of m), keeps every N-th row of it from its
own rank, and trains a copy of the model wrapped in PyTorch's ``DistributedDataParallel``, which
averages the gradients of the N processes in its backward pass.  Each loss is a mean over the rows'
tokens or examples, so with equal shares the average of the N local means is the mean of the whole
batch (unequal shares are weighted by their rows): each optimizer step is the one-process step on the
same batch, up to the order of float sums, and every process ends with the same weights.

Evaluation runs on every process (the same weights and validation windows give the same scores, so
every process keeps the same best checkpoint); each process keeps its own checkpoint folder (nodes
need not share a disk), and rank 0 alone writes the result.  Without a process group nothing here
changes a thing.
"""

from __future__ import annotations

from typing import Any

import torch

from core.engine import distributed
from core.errors import RecipeError


def processes() -> int:
    """How many processes train together (the process group's size; 1 without one)."""
    return distributed.world_size()


def rows(batch: Any) -> int:
    """How many examples (rows) a batch holds: a tensor's first dimension, or its first tensor's."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else ()
    return next((rows(value) for value in values if isinstance(value, (torch.Tensor, dict, tuple, list))), 1)


def share_weight(batch_rows: int) -> float:
    """Factor on this process's mean loss so that DDP's average of the processes' gradients is the gradient
    of the whole batch's mean: (its rows × N) / the batch's rows (1 when the rows split evenly)."""
    processes = distributed.world_size()
    if processes == 1:
        return 1.0
    if batch_rows < processes:
        raise RecipeError(f"a batch of {batch_rows} cannot be shared among {processes} processes: set batch_size "
                          f"to at least {processes} (best a multiple of it)")
    mine = len(range(distributed.rank(), batch_rows, processes))
    return mine * processes / batch_rows


def local_share(batch: Any) -> Any:
    """This process's rows (every N-th from its rank) of a batch: a tensor, or a dict / tuple / list of them."""
    processes = distributed.world_size()
    if processes == 1:
        return batch
    rank = distributed.rank()
    if isinstance(batch, torch.Tensor):
        return batch[rank::processes]
    if isinstance(batch, dict):
        return {key: local_share(value) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(local_share(value) for value in batch)
    return batch


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` on several processes, else ``model`` itself.

    The processes start from identical weights (each loaded the same model and ran the same steps);
    DDP checks that by broadcasting rank 0's parameters once.
    """
    if distributed.world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def sum_across(values: list[float]) -> list[float]:
    """The sum over the processes of each value (e.g. each one's share of the batch's mean loss)."""
    if distributed.world_size() == 1:
        return values
    total = torch.tensor(values, dtype=torch.float64, device=distributed.collective_device())
    distributed.all_reduce_tensor(total)
    return total.tolist()


def store_suffix() -> str:
    """A checkpoint-folder suffix per process (rank 0 keeps the usual folder)."""
    rank = distributed.rank()
    return f"-rank{rank}" if rank else ""
