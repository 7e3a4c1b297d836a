"""How sensitive each layer is to being quantized: the inputs of mixed-precision bit allocation.

Two measures, both on a few calibration windows and both "only this layer quantized":

- ``fisher`` (default, one backward pass per window): the loss increase predicted by a
  second-order Taylor expansion with the diagonal empirical Fisher F = mean over windows of g²
  (g = gradient of the window's language-model loss w.r.t. the weight):
  Δloss ≈ ½ Σ F ⊙ (W − Ŵ_b)², with Ŵ_b the layer rounded to b bits.  All layers and all bit
  widths cost one set of gradients (the HAWQ/SqueezeLLM-style sensitivity).
- ``loss`` (exact, slow): the calibration loss with the layer rounded to b bits minus the loss of
  the unquantized model, one forward pass per layer, bit width and window.

Both use round-to-nearest with the step's grid settings as the quantizer being measured, also
when the step then quantizes with GPTQ (GPTQ's error is smaller, but its ranking of layers is
what matters here and RTN is its cheap proxy).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from core.events import ProgressMeter
from core.techniques.quantize.grid import dequantize, round_to_grid

MEASURES = ("fisher", "loss")


def rounded_weight(weight: torch.Tensor, bits: int, group_size: int, symmetric: bool, clip: str) -> torch.Tensor:
    """The weight after round-to-nearest at ``bits`` bits, in the weight's dtype."""
    codes, scale, zero = round_to_grid(weight, bits, group_size, symmetric, dtype=weight.dtype, clip=clip)
    return dequantize(codes, scale, zero).to(weight.dtype)


def _lm_loss(model: nn.Module, window: torch.Tensor) -> torch.Tensor:
    ids = window.unsqueeze(0).to(next(model.parameters()).device)
    return model(ids, labels=ids, use_cache=False).loss


@contextmanager
def _grad_only_on(model: nn.Module, weights: list[nn.Parameter]):
    """Gradients for ``weights`` alone; every parameter's requires_grad is restored on exit."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
            p.grad = None


def fisher_diagonal(model: nn.Module, linears: dict[str, nn.Linear], windows: torch.Tensor,
                    step_index: int | None = None):
    """Generator: yields Progress; returns {name: mean squared gradient of the LM loss} per weight."""
    meter = ProgressMeter("Measuring layer sensitivity (gradients)", len(windows), step_index)
    fisher = {name: torch.zeros_like(linear.weight, dtype=torch.float32) for name, linear in linears.items()}
    was_training = model.training
    model.eval()
    try:
        with _grad_only_on(model, [linear.weight for linear in linears.values()]), torch.enable_grad():
            for index, window in enumerate(windows):
                for linear in linears.values():
                    linear.weight.grad = None
                _lm_loss(model, window).backward()
                for name, linear in linears.items():
                    fisher[name] += linear.weight.grad.float().pow(2) / len(windows)
                event = meter.update(index + 1)
                if event:
                    yield event
    finally:
        model.train(was_training)
    return fisher


def fisher_sensitivities(model: nn.Module, linears: dict[str, nn.Linear], windows: torch.Tensor,
                         levels: list[int], group_size: int, symmetric: bool, clip: str,
                         step_index: int | None = None):
    """Generator: returns {name: {bits: ½ Σ F ⊙ (W − Ŵ_bits)²}} (predicted loss increase)."""
    fisher = yield from fisher_diagonal(model, linears, windows, step_index)
    result: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        for name, linear in linears.items():
            weight = linear.weight.float()
            result[name] = {bits: 0.5 * float((fisher[name] * (weight - rounded_weight(
                linear.weight, bits, group_size, symmetric, clip).float()).pow(2)).sum()) for bits in levels}
    return result


def loss_sensitivities(model: nn.Module, linears: dict[str, nn.Linear], windows: torch.Tensor,
                       levels: list[int], group_size: int, symmetric: bool, clip: str,
                       step_index: int | None = None):
    """Generator: returns {name: {bits: mean calibration loss with only that layer rounded − base loss}}."""
    meter = ProgressMeter("Measuring layer sensitivity (loss)", len(linears) * len(levels), step_index)

    def mean_loss() -> float:
        return sum(float(_lm_loss(model, window)) for window in windows) / len(windows)

    was_training = model.training
    model.eval()
    result: dict[str, dict[int, float]] = {}
    done = 0
    try:
        with torch.no_grad():
            base = mean_loss()
            for name, linear in linears.items():
                original = linear.weight.data.clone()
                result[name] = {}
                try:
                    for bits in levels:
                        linear.weight.data.copy_(rounded_weight(original, bits, group_size, symmetric, clip))
                        result[name][bits] = mean_loss() - base
                        done += 1
                        event = meter.update(done)
                        if event:
                            yield event
                finally:
                    linear.weight.data.copy_(original)  # the model leaves unchanged, also on cancel
    finally:
        model.train(was_training)
    return result


def measure_sensitivities(measure: str, model: nn.Module, linears: dict[str, nn.Linear], windows: torch.Tensor,
                          levels: list[int], group_size: int, symmetric: bool, clip: str,
                          step_index: int | None = None):
    """Generator dispatching to the chosen measure; returns {name: {bits: sensitivity}}."""
    if measure not in MEASURES:
        raise ValueError(f"unknown sensitivity measure {measure!r}; use one of {MEASURES}")
    function = fisher_sensitivities if measure == "fisher" else loss_sensitivities
    return (yield from function(model, linears, windows, levels, group_size, symmetric, clip, step_index))
