"""One recipe on several processes (``torchrun`` / ``accelerate launch``): who this process is, and
combining the calibration statistics of all of them.

torchrun (which ``accelerate launch`` calls) starts one process per GPU and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_environment` joins those processes into
one torch.distributed process group (gloo on the CPU, nccl on CUDA).  Without a process group every
function here answers as a single process does, so a one-process run never notices this module.

The calibration engine (:mod:`core.engine.calibration`) gives each process its share of the windows
(:func:`shard`) and, before each block is compressed, :func:`all_reduce_stats` adds up every
statistics object's sums and counts across the processes, so every process compresses with the
statistics of all windows and ends with identical weights.  Rank 0 alone writes the result.

A process that dies makes the others' next collective fail (at once when its connection closes, at the
latest after the group's timeout, ``COMPRESSION_STUDIO_DIST_TIMEOUT`` seconds): they stop with
:class:`PeerLost` and nothing is written.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from core.errors import StudioError

TIMEOUT_ENV = "COMPRESSION_STUDIO_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800  # a block's calibration on a 70B model can take minutes between two collectives

Reduce = Callable[..., None]  # reduce(tensor, op="sum" | "max"): in place, across every process


class PeerLost(StudioError):
    """Another process of the same distributed run stopped; this one stops too, with nothing written."""


def active() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's index in the run (0 when alone)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """How many processes run this recipe together (1 when alone)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes the result and the history (rank 0, or the only process)."""
    return rank() == 0


def init_from_environment(device: str) -> str:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1); return this
    process's device (``cuda:LOCAL_RANK`` for a CUDA run, else ``device`` unchanged)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise StudioError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start several processes with "
                          "torchrun or accelerate launch, which set them")
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(torch.device(device))
    timeout = dt.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timeout)
    return device


def shutdown() -> None:
    """Leave the process group (at the end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(windows: torch.Tensor) -> torch.Tensor:
    """This process's share of the calibration windows [n, L]: every ``world_size``-th one from ``rank``."""
    count = world_size()
    if count == 1:
        return windows
    if len(windows) < count:
        raise StudioError(f"{len(windows)} calibration windows cannot be shared among {count} processes: "
                          f"use at least {count} windows or fewer processes")
    return windows[rank()::count]


def _reduce(tensor: torch.Tensor, op: str = "sum") -> None:
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
    try:
        dist.all_reduce(tensor, op=ops[op])
    except RuntimeError as exc:  # gloo/nccl: a peer's connection closed, or the group's timeout passed
        raise PeerLost(f"another process of this run stopped ({str(exc).splitlines()[0][:160]}); "
                       "nothing was written") from exc


def collective_device() -> str:
    """Where a tensor must live for this group's collectives: CUDA under nccl, else the CPU."""
    return "cuda" if active() and dist.get_backend() == "nccl" else "cpu"


def all_reduce_tensor(tensor: torch.Tensor, op: str = "sum") -> None:
    """Sum (or max) ``tensor`` across every process, in place; a process that died raises :class:`PeerLost`."""
    if world_size() > 1:
        _reduce(tensor, op)


def all_reduce_stats(stats: dict[str, Any]) -> None:
    """Combine each statistics object across the processes, in place (shared objects once).

    Every object says how it combines through ``all_reduce(reduce)`` (sums and counts add, maxima take
    the maximum); one without it cannot run on several processes and says so.
    """
    if world_size() == 1:
        return
    seen: set[int] = set()
    for name in sorted(stats):  # the same order on every process: the collectives must match up
        obj = stats[name]
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        combine = getattr(obj, "all_reduce", None)
        if combine is None:
            raise StudioError(f"{type(obj).__name__} statistics cannot be combined across processes yet; "
                              "run this step on one process")
        combine(_reduce)


def barrier() -> None:
    """Wait until every process gets here; a process that died makes this raise :class:`PeerLost`."""
    if world_size() == 1:
        return
    flag = torch.ones(1, device=collective_device())
    _reduce(flag)  # an all-reduce rather than dist.barrier: it fails the same way as the statistics do
