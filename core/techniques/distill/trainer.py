"""One training loop for every distillation step: AdamW, a learning-rate schedule, gradient
accumulation, evaluation with checkpoints, best-checkpoint selection, resume, cancel at every step.

The loop knows nothing about the task.  The caller gives it

* ``batch_at(m)``: the m-th micro-batch of the whole run (a pure function of m, so a resumed run sees
  exactly the batches the uninterrupted run would have seen);
* ``compute_loss(model, batch)``: ``(total, soft, hard, count)``, count being tokens or examples;
* ``evaluate(model)``: a job returning ``{metric: value}`` on validation data.

Every optimizer step yields ``Metric`` events (``loss/total``, ``loss/soft``, ``loss/hard``,
``learning_rate`` and the throughput), and each evaluation ``eval/<metric>`` events; every yield
is a cancel point.  Random-number state is saved with each checkpoint, so a resumed run continues
bit for bit like one that was never stopped (on the same machine and device).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import torch

from core.events import Log, Metric, ProgressMeter
from core.techniques.distill import data_parallel
from core.techniques.distill.checkpoints import CheckpointStore

SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class TrainSettings:
    """How to train; ``total_steps`` counts optimizer steps (each of ``grad_accumulation`` micro-batches)."""

    total_steps: int
    learning_rate: float = 5e-5
    schedule: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.01
    grad_accumulation: int = 1
    eval_every: int = 0  # 0: only at the end
    max_grad_norm: float = 1.0
    metric: str = "loss"  # the evaluation metric that picks the best checkpoint
    higher_is_better: bool = False
    throughput_unit: str = "tokens"
    seed: int = 0
    device: str = "cpu"
    mixed_precision: bool = True  # bfloat16 autocast, on CUDA only
    stage: str = "Training"
    step_index: int | None = None
    notes: tuple[str, ...] = ()  # said in the log when training starts (e.g. a warm-up shortened to fit)


@dataclass
class TrainResult:
    steps: int
    best_step: int | None
    best_metric: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    seconds: float = 0.0
    final_loss: float | None = None


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based).

    Linear warm-up from 1/(warmup+1) to 1 over ``warmup_steps``, then constant, linear decay to 0,
    or half a cosine down to 0 over the remaining steps.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    remaining = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / remaining)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.learning_rate)


def _accelerator(settings: TrainSettings):
    """An ``accelerate.Accelerator`` when several GPUs are present (and accelerate is installed), else None."""
    if not (settings.device.startswith("cuda") and torch.cuda.device_count() > 1):
        return None
    try:
        from accelerate import Accelerator
    except ImportError:
        return None
    return Accelerator(mixed_precision="bf16" if settings.mixed_precision else "no")


def _rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(model: torch.nn.Module, *, batch_at: Callable[[int], Any],
          compute_loss: Callable[[torch.nn.Module, Any], tuple], evaluate: Callable[[torch.nn.Module], Generator],
          settings: TrainSettings, store: CheckpointStore, resume: bool = False,
          ) -> Generator[Any, None, TrainResult]:
    """Train ``model`` in place and leave the best evaluated weights in it; see the module docstring."""
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    optimizer = _optimizer(model, settings)
    step, history, best, best_step, resumed_from = 0, [], None, None, None
    for note in settings.notes:
        yield Log(note, level="warning")
    if resume:
        state = store.load(model)
        if state is None:
            yield Log("No checkpoint to resume from: training from the start.", level="warning")
        else:
            optimizer.load_state_dict(state["optimizer"])
            _set_rng_state(state["rng"])
            step, history, resumed_from = int(state["step"]), list(state["history"]), int(state["step"])
            best, best_step = state["best"], state["best_step"]
            yield Log(f"Resumed from the checkpoint at step {step} of {settings.total_steps}.")
    else:
        store.clear()
    accelerator = _accelerator(settings)
    train_model = model
    if accelerator is not None:
        train_model, optimizer = accelerator.prepare(model, optimizer)
        yield Log(f"Training with accelerate on {torch.cuda.device_count()} GPUs.")
    elif data_parallel.processes() > 1:  # torchrun: each process trains on its share of each batch
        train_model = data_parallel.wrap(model)
        yield Log(f"Training data-parallel on {data_parallel.processes()} processes: each takes its "
                  "share of every batch and the gradients are averaged.")
    autocast = settings.device.startswith("cuda") and settings.mixed_precision and accelerator is None
    meter = ProgressMeter(settings.stage, settings.total_steps, settings.step_index)
    accumulation = settings.grad_accumulation
    final_loss = None

    def evaluation(at_step: int):
        nonlocal best, best_step
        model.eval()
        with torch.no_grad():
            scores = yield from evaluate(model)
        for name, value in scores.items():
            yield Metric(f"eval/{name}", float(value), step=at_step, step_index=settings.step_index)
        history.append({"step": at_step, **{k: float(v) for k, v in scores.items()}})
        value = float(scores[settings.metric])
        improved = best is None or (value > best if settings.higher_is_better else value < best)
        if improved:
            best, best_step = value, at_step
            store.save_best(model)
        store.save(model, {"step": at_step, "optimizer": optimizer.state_dict(), "rng": _rng_state(),
                           "history": history, "best": best, "best_step": best_step})
        yield Log(f"Step {at_step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items())
                  + (" (best so far)" if improved else ""))

    if resumed_from is None and settings.eval_every:
        yield from evaluation(0)  # the starting point, so "best" can never be worse than the student as built
    while step < settings.total_steps:
        train_model.train()
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate * lr_factor(step, settings.total_steps, settings.warmup_steps,
                                                             settings.schedule)
        tick = time.perf_counter()
        sums, count = [0.0, 0.0, 0.0], 0
        with torch.enable_grad():
            for micro in range(accumulation):
                batch = batch_at(step * accumulation + micro)
                # On several processes: this one's rows, its mean loss weighted by its share (see data_parallel)
                weight = data_parallel.share_weight(data_parallel.rows(batch))
                batch = data_parallel.local_share(batch)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    total, soft, hard, n = compute_loss(train_model, batch)
                scaled = total * (weight / accumulation)
                accelerator.backward(scaled) if accelerator is not None else scaled.backward()
                share = weight / data_parallel.processes() / accumulation
                sums = [s + float(v.detach()) * share for s, v in zip(sums, (total, soft, hard), strict=True)]
                count += int(n)
            *sums, count = data_parallel.sum_across([*sums, count])  # the whole batch's, on every process
            count = int(count)
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        step += 1
        seconds = max(time.perf_counter() - tick, 1e-9)
        final_loss = sums[0]
        for name, value in zip(("loss/total", "loss/soft", "loss/hard"), sums, strict=True):
            yield Metric(name, value, step=step, step_index=settings.step_index)
        yield Metric("learning_rate", optimizer.param_groups[0]["lr"], step=step, step_index=settings.step_index)
        yield Metric(f"{settings.throughput_unit}_per_s", count / seconds, step=step,
                     unit=f"{settings.throughput_unit}/s", step_index=settings.step_index)
        event = meter.update(step)
        if event:
            yield event
        if step == settings.total_steps or (settings.eval_every and step % settings.eval_every == 0):
            yield from evaluation(step)
    model.eval()
    if best_step is not None and best_step != step:
        store.load_best(model)
        yield Log(f"Kept the best checkpoint (step {best_step}, {settings.metric} {best:.4g}) as the result.")
    return TrainResult(steps=step, best_step=best_step, best_metric=best, history=history,
                       resumed_from=resumed_from, seconds=time.perf_counter() - started, final_loss=final_loss)
