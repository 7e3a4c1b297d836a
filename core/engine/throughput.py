"""How fast this machine runs the loaded model: a short measured probe, kept for the pre-flight estimate.

The estimate's times are forward passes over tokens plus each technique's own work, so the one number
that decides them is how long a forward pass of *this* model takes on *this* device with *these*
threads.  :func:`measure_throughput` times one forward pass over a window of ``PROBE_TOKENS`` tokens
(after a short warm-up), about a second on a laptop CPU for a 135M model; it runs in the model-loading
job (a worker thread), never on the GUI thread.  The result is kept in the app's data folder, keyed by
the model's identity (source, parameter count, dtype), the device, the torch threads and torch's
version, so a model loaded again is not timed again.  Until a probe is kept, the estimate falls back to
plain arithmetic (and says so).

A probe taken while other programs kept the CPUs busy (a one-minute load average above the core count)
times the machine at a fraction of its speed and would make every later estimate too long, so it is
kept only until the next load of the model, which times it again and keeps the quicker of the two.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import StudioError
from core.events import Log
from core.io.export import write_text_atomic
from core.paths import data_dir

PROBE_TOKENS = 256  # one window this long is timed: long enough to be a real forward pass, short enough to be quick
PROBE_VERSION = 1


@dataclass
class Throughput:
    """One measured forward pass: ``seconds`` for ``tokens`` tokens of a model with ``parameters`` weights."""

    seconds: float
    tokens: int
    parameters: int
    device: str
    threads: int
    measured_at: str = ""
    load_average: float | None = None  # the machine's one-minute load average when it was timed
    cores: int = 0  # the CPUs this process could run on then

    @property
    def busy(self) -> bool:
        """Whether it was timed while more programs wanted the CPUs than there were (it reads slow)."""
        return self.load_average is not None and self.cores > 0 and self.load_average > self.cores

    @property
    def seconds_per_token(self) -> float:
        return self.seconds / max(1, self.tokens)

    @property
    def seconds_per_parameter_token(self) -> float:
        """Seconds per weight per token: the machine's speed on this model, independent of its size."""
        return self.seconds_per_token / max(1, self.parameters)


def machine_load() -> tuple[float | None, int]:
    """(one-minute load average or None where the system does not say, CPUs this process may use)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        return float(os.getloadavg()[0]), cores
    except (AttributeError, OSError):  # Windows has no load average
        return None, cores


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def throughput_key(source: str, parameters: int, dtype: str, device: str, threads: int) -> str:
    """The key a probe is kept under: the model's identity, the device and the threads (and torch's version)."""
    import torch

    text = json.dumps([PROBE_VERSION, str(source), int(parameters), str(dtype), str(device), int(threads),
                       torch.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def probe_file() -> Path:
    return data_dir() / "throughput.json"


def _read_all() -> dict[str, Any]:
    try:
        kept = json.loads(probe_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def load_throughput(key: str) -> Throughput | None:
    """The kept probe for ``key``, or None when there is none (or the file is unreadable)."""
    entry = _read_all().get(key)
    if not isinstance(entry, dict):
        return None
    try:
        return Throughput(**entry)
    except TypeError:
        return None


def keep_throughput(key: str, measured: Throughput) -> None:
    """Keep a probe under ``key`` (atomically; a failure to write only means it is measured again)."""
    kept = _read_all()
    kept[key] = asdict(measured)
    try:
        probe_file().parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(probe_file(), json.dumps(kept, indent=1))
    except (StudioError, OSError):
        return


def measure_throughput(model: Any, parameters: int, device: str, tokens: int = PROBE_TOKENS) -> Throughput:
    """Time a forward pass of ``model`` over ``tokens`` token ids (after an 8-token warm-up): the quicker of two
    passes, or the only one when it took over a second.

    The window is clipped to the model's context; the token ids are small ordinary ids (the speed of a
    forward pass does not depend on which tokens they are).
    """
    import torch

    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None) or tokens
    tokens = max(8, min(tokens, int(limit)))
    model_device = next(iter(model.parameters())).device
    ids = (torch.arange(tokens, device=model_device) % 1000 + 10).unsqueeze(0)
    load_average, cores = machine_load()
    timings = []
    with torch.inference_mode():
        model(input_ids=ids[:, :8], use_cache=False)
        while len(timings) < 2 and sum(timings) < 1.0:  # a second pass only where the first was quick
            if model_device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            model(input_ids=ids, use_cache=False)
            if model_device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - started)
    seconds = min(timings)
    return Throughput(seconds, tokens, int(parameters), str(device), torch_threads(),
                      dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), load_average, cores)


def iter_probe(model: Any, source: str, summary: Any, device: str) -> Generator[Any, None, Throughput | None]:
    """At model load: time a forward pass unless this model, device and thread count were timed before
    on a machine that was not busy (a busy probe is timed again and the quicker one kept).

    Returns the kept or new probe; a failure is not an error (the estimate then uses arithmetic).
    """
    key = throughput_key(source, summary.parameters, summary.dtype, device, torch_threads())
    kept = load_throughput(key)
    if kept is not None and not kept.busy:
        return kept
    yield Log("Timing one forward pass for the time estimate…" if kept is None else
              "Timing one forward pass again for the time estimate (the machine was busy the last time)…")
    try:
        measured = measure_throughput(model, summary.parameters, device)
    except Exception:  # an unusual model (no input_ids, say): the estimate falls back to arithmetic
        return kept
    if kept is not None and kept.seconds_per_token < measured.seconds_per_token:
        return kept  # the machine is slower now than at the busy probe: keep the quicker one
    keep_throughput(key, measured)
    return measured
