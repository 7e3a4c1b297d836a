"""The technique registry: technique name -> config class + handler.

A technique is one module under ``core/techniques/`` that calls :func:`register` at import time.
The runner, the CLI and the GUI discover techniques from here, so adding a technique needs no
change anywhere else.

A handler is a generator function ``apply(model, config, ctx)`` that yields events (every yield
is a cancel point) and returns a :class:`StepReport`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any

from core.errors import RecipeError
from core.techniques import load_all


@dataclass(frozen=True)
class Needs:
    """What a technique needs to run, so the app can grey it out and say why."""

    calibration_data: bool = False
    gpu: bool = False
    cpu_only: bool = False  # runs only on the CPU (e.g. PyTorch's dynamic int8 kernels)
    packages: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ("causal-lm", "sequence-classification")
    # The step may train against the run's original model (the runner keeps a copy); a config can narrow
    # this with a ``needs_original()`` method (e.g. only when the student is the model as it arrives).
    teacher: bool = False
    # The step is a training run: it reports a loss every optimizer step (the Run page shows its Loss chart).
    trains: bool = False


@dataclass
class StepReport:
    """What a step did: a one-line summary, numbers, per-layer rows, and honest notes."""

    summary: str
    metrics: dict[str, float] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Handler = Callable[..., Generator[Any, None, StepReport]]


@dataclass(frozen=True)
class TechniqueInfo:
    name: str
    title: str
    family: str
    summary: str
    config_cls: type
    handler: Handler
    needs: Needs = Needs()

    def unavailable_reason(self, *, device: str = "cpu", task: str = "causal-lm") -> str | None:
        """Why this technique cannot run here, in plain words, or None if it can."""
        if self.needs.gpu and not device.startswith("cuda"):
            return f"{self.title} needs an NVIDIA GPU (CUDA); this run uses {device}."
        if self.needs.cpu_only and device != "cpu":
            return f"{self.title} runs only on the CPU; this run uses {device}. Choose the CPU for this run."
        if task not in self.needs.tasks:
            return f"{self.title} does not apply to {task} models."
        for package in self.needs.packages:
            if importlib.util.find_spec(package) is None:
                return f"{self.title} needs the Python package '{package}', which is not installed."
        return None


FAMILIES = ("quantization", "pruning", "distillation", "low-rank", "sharing")
_REGISTRY: dict[str, TechniqueInfo] = {}


def register(name: str, *, title: str, family: str, summary: str, config: type,
             needs: Needs = Needs()) -> Callable[[Handler], Handler]:
    """Decorator that registers a handler under ``name``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; use one of {FAMILIES}")

    def decorate(handler: Handler) -> Handler:
        if name in _REGISTRY and _REGISTRY[name].handler is not handler:
            raise ValueError(f"technique {name!r} registered twice")
        _REGISTRY[name] = TechniqueInfo(name, title, family, summary, config, handler, needs)
        return handler

    return decorate


def techniques() -> dict[str, TechniqueInfo]:
    """All registered techniques by name (importing every module under core.techniques once).

    Discovery runs even if some technique module was imported directly before (which registers
    only that module's techniques).
    """
    load_all()
    return dict(_REGISTRY)


def get_technique(name: str) -> TechniqueInfo:
    known = techniques()
    if name not in known:
        raise RecipeError(f"unknown technique {name!r}; available: {', '.join(sorted(known))}")
    return known[name]
