"""Training options shared by the distillation and fine-tuning steps, and how they become TrainSettings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.engine.params import param
from core.errors import RecipeError
from core.techniques.distill.losses import check_loss_settings
from core.techniques.distill.trainer import SCHEDULES, TrainSettings


@dataclass
class TrainingOptions:
    learning_rate: float = param(5e-5, "Peak learning rate of AdamW.", minimum=0.0, exclusive_minimum=True,
                                 maximum=1.0, label="Learning rate", expert=True)
    schedule: str = param("linear", "How the learning rate changes after warm-up: constant, linear decay to 0, "
                          "or cosine decay to 0.", choices=SCHEDULES,
                          label="Learning-rate schedule", expert=True)
    warmup_steps: int = param(0, "Steps over which the learning rate rises linearly to its peak.", minimum=0,
                              label="Warm-up steps", expert=True)
    weight_decay: float = param(0.01, "AdamW weight decay (not applied to biases and norms).", minimum=0.0,
                                maximum=1.0, label="Weight decay", expert=True)
    batch_size: int = param(8, "Examples (text windows or labelled texts) per forward pass.", minimum=1,
                            maximum=4096, label="Batch size", expert=True)
    grad_accumulation: int = param(1, "Forward passes whose gradients add up before each optimizer step "
                                   "(effective batch = batch_size × this).", minimum=1, maximum=1024,
                                   label="Batches per step (accumulation)", expert=True)
    max_steps: int = param(0, "Optimizer steps to train (0 = use epochs instead).", minimum=0,
                           label="Training steps (0 = use epochs)")
    epochs: float = param(1.0, "Passes over the training data when max_steps is 0.", minimum=0.0,
                          exclusive_minimum=True, maximum=1000.0, label="Epochs")
    eval_every: int = param(0, "Evaluate (and write a checkpoint) every this many steps; 0 = once per epoch.",
                            minimum=0, label="Evaluate every (steps)", expert=True)

    def check_training(self) -> None:
        if self.warmup_steps and self.max_steps and self.warmup_steps >= self.max_steps:
            raise RecipeError(f"warmup_steps ({self.warmup_steps}) must be smaller than max_steps "
                              f"({self.max_steps})")


@dataclass
class LossOptions:
    temperature: float = param(2.0, "Softens both models' probabilities before they are compared (1 = as they "
                               "are; 2–4 shows the student more of the teacher's 'dark knowledge').",
                               minimum=0.0, exclusive_minimum=True, maximum=100.0,
                               label="Softening (temperature)", expert=True)
    alpha: float = param(0.5, "Weight of the teacher's soft targets; 1 − alpha goes to the true next token or "
                         "label. 1 = imitate the teacher only, 0 = ordinary training.", minimum=0.0, maximum=1.0,
                         label="Weight of the teacher (alpha)", expert=True)

    def check_loss(self) -> None:
        check_loss_settings(self.alpha, self.temperature)


def settings_for(options: TrainingOptions, examples: int, *, seed: int, device: str, metric: str,
                 higher_is_better: bool, unit: str, stage: str, step_index: int | None) -> TrainSettings:
    """TrainSettings for ``examples`` training examples: steps from max_steps or epochs, eval cadence."""
    if examples < 1:
        raise RecipeError("there is no training data: add text or labelled examples")
    batches_per_epoch = math.ceil(examples / options.batch_size)
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / options.grad_accumulation))
    total = options.max_steps or max(1, math.ceil(options.epochs * steps_per_epoch))
    warmup, notes = options.warmup_steps, ()
    if warmup >= total:
        # a preset's warm-up is sized for its own data; a person's smaller dataset gives fewer steps
        warmup = total // 10
        notes = (f"The {options.warmup_steps} warm-up steps asked for are as many as this training's {total} steps "
                 f"or more (the data is small): warming the learning rate up over {warmup} steps instead.",)
    eval_every = options.eval_every or steps_per_epoch
    return TrainSettings(total_steps=total, learning_rate=options.learning_rate, schedule=options.schedule,
                         warmup_steps=warmup, notes=notes, weight_decay=options.weight_decay,
                         grad_accumulation=options.grad_accumulation, eval_every=eval_every, metric=metric,
                         higher_is_better=higher_is_better, throughput_unit=unit, seed=seed, device=device,
                         stage=stage, step_index=step_index)


def shuffled_batch(index: int, count: int, batch_size: int, seed: int):
    """Example indices of the ``index``-th micro-batch over repeated seeded shuffles of ``count`` examples."""
    import torch

    per_epoch = math.ceil(count / batch_size)
    epoch, position = divmod(index, per_epoch)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[position * batch_size:(position + 1) * batch_size]
