"""Language-model quality measurements: perplexity and KL divergence to a teacher.

Every figure here is measured on the model's own device, in eval mode, under
``torch.inference_mode()`` (entered per batch, never across a ``yield``), and is deterministic
for a deterministic model.  Long measurements are generator functions (``iter_*``) that yield
:class:`core.events.Progress` and return their result; each has a plain wrapper of the same
name without ``iter_`` that runs it with ``drain``.

The other measurements live next door: :mod:`core.eval.metrics` (classification accuracy, precision,
recall, F1 and label prediction) and :mod:`core.eval.speed` (prefill latency, decode throughput and
greedy sample completions).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from core.data.perplexity_windows import PerplexityWindows
from core.errors import DataError, StudioError
from core.events import Progress, ProgressMeter, drain


# ----------------------------------------------------------------------------------- helpers
def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(*models: torch.nn.Module) -> Iterator[None]:
    """Put models in eval mode; restore their training flags afterwards.

    Inference mode is deliberately not entered here: it is thread-local state, and a generator
    that yields inside it would leak it into its consumer.  Wrap each computation instead.
    """
    was_training = [m.training for m in models]
    try:
        for m in models:
            m.eval()
        yield
    finally:
        for m, flag in zip(models, was_training, strict=True):
            m.train(flag)


def _logits(output: Any) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output[0]


def _check_windows(model: torch.nn.Module, windows: torch.Tensor, reads: int | None = None) -> None:
    """Fail with an actionable message on windows the model cannot score (``reads``: how many positions of
    a window the model reads; all of them unless given)."""
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.dtype != torch.long:
        raise DataError("Token windows must be a 2-D tensor of token ids [windows, length]; "
                        "build them with the dataset loader.")
    n, length = windows.shape
    if n < 1 or length < 2:
        raise DataError(f"Need at least one window of at least 2 tokens to measure, got shape {tuple(windows.shape)}; "
                        "use a longer text or a longer window.")
    max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    reads = length if reads is None else reads
    if isinstance(max_positions, int) and reads > max_positions:
        raise DataError(f"Windows of {reads} tokens are longer than the model's context of {max_positions} tokens; "
                        "choose a shorter window.")
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab = getattr(embeddings, "num_embeddings", None)
    if isinstance(vocab, int) and (int(windows.max()) >= vocab or int(windows.min()) < 0):
        raise DataError(f"The token windows hold ids outside the model's vocabulary of {vocab}; "
                        "tokenize the text with this model's own tokenizer.")


# ----------------------------------------------------------------------------------- perplexity
@dataclass
class PerplexityResult:
    """Perplexity over a set of token windows (see :func:`iter_perplexity` for the method)."""

    perplexity: float  # exp(nll_per_token)
    nll_per_token: float  # mean next-token negative log-likelihood, nats per predicted token
    tokens: int  # number of predicted (scored) tokens
    windows: int  # number of windows scored
    seconds: float  # wall-clock time of the measurement
    convention: str = "transformers"  # how the text was cut (core.data.perplexity_windows.CONVENTIONS)
    method: str = ""  # that convention in a sentence

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iter_perplexity(model: torch.nn.Module, windows: torch.Tensor | PerplexityWindows, batch_size: int = 4,
                    ) -> Generator[Progress, None, PerplexityResult]:
    """Measure a causal LM's perplexity on token windows, yielding progress.

    Method: each window is read on its own (no context carries over between windows).  A plain
    ``[n, L]`` tensor is scored in transformers' convention: the model predicts positions 1..L-1
    from the tokens before them, the first token has no context and is not scored.  A
    :class:`PerplexityWindows` says per window which predictions count (lm-eval's and llama.cpp's
    conventions, see :mod:`core.data.perplexity_windows`).  The negative log-likelihoods of all
    scored tokens are summed in float64 and perplexity = exp(total NLL / scored tokens).
    Log-softmax is computed in float32 even for half-precision models, one window at a time, so at
    most one [L, V] float32 copy of the logits exists at once.  The result does not depend on
    ``batch_size`` beyond floating-point noise.
    """
    if not isinstance(windows, PerplexityWindows):
        _check_windows(model, windows)
        windows = PerplexityWindows.plain(windows)
    tokens = windows.tokens
    _check_windows(model, tokens, reads=tokens.shape[1] - 1)
    if batch_size < 1:
        raise StudioError(f"Batch size must be at least 1, got {batch_size}.")
    device = model_device(model)
    n = tokens.shape[0]
    meter = ProgressMeter("perplexity", n)
    total_nll, total_tokens = 0.0, 0
    start = time.perf_counter()
    with eval_mode(model):
        for first in range(0, n, batch_size):
            with torch.inference_mode():
                batch = tokens[first:first + batch_size].to(device)
                # the model reads every id but the last; right padding is never seen by earlier positions
                logits = _logits(model(input_ids=batch[:, :-1], use_cache=False))
                for row in range(batch.shape[0]):
                    begin, end = windows.first_scored[first + row], windows.lengths[first + row] - 1
                    nll = F.cross_entropy(logits[row, begin:end].float(), batch[row, begin + 1:end + 1],
                                          reduction="sum")
                    total_nll += float(nll.double())
                    total_tokens += end - begin
                del logits
            event = meter.update(min(first + batch_size, n))
            if event:
                yield event
    nll_per_token = total_nll / total_tokens
    return PerplexityResult(perplexity=math.exp(nll_per_token), nll_per_token=nll_per_token,
                            tokens=total_tokens, windows=n, seconds=time.perf_counter() - start,
                            convention=windows.convention, method=windows.description)


def perplexity(model: torch.nn.Module, windows: torch.Tensor | PerplexityWindows, batch_size: int = 4) -> PerplexityResult:
    """:func:`iter_perplexity` without the progress events."""
    return drain(iter_perplexity(model, windows, batch_size))


# ----------------------------------------------------------------------------------- KL to teacher
@dataclass
class KLResult:
    """How closely a student's next-token distribution matches a teacher's."""

    kl_per_token: float  # mean KL(teacher || student) per position, nats
    top1_agreement: float  # share of positions where both models' most likely next token agree
    tokens: int  # number of positions compared: windows * length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iter_kl_to_teacher(student: torch.nn.Module, teacher: torch.nn.Module, windows: torch.Tensor,
                       batch_size: int = 4, temperature: float = 1.0,
                       ) -> Generator[Progress, None, KLResult]:
    """Measure the mean per-token KL divergence from the teacher to the student, yielding progress.

    Direction: KL(teacher || student) = sum_v p_t(v) * (log p_t(v) - log p_s(v)), the teacher's
    distribution being the reference (the same direction as the usual distillation loss); it is
    in nats and 0 when the two distributions are identical.  Both models see the same windows;
    every position of every window is compared (all ``n * L`` next-token distributions), with
    logits divided by ``temperature`` and log-softmax taken in float32.  The mean is over
    positions, accumulated in float64.  ``top1_agreement`` is the share of positions where the
    argmax of the two models' logits is the same token.  The models may live on different
    devices; the teacher's logits are moved to the student's device.
    """
    _check_windows(student, windows)
    _check_windows(teacher, windows)
    if batch_size < 1:
        raise StudioError(f"Batch size must be at least 1, got {batch_size}.")
    if not temperature > 0:
        raise StudioError(f"Temperature must be positive, got {temperature}.")
    s_device, t_device = model_device(student), model_device(teacher)
    n = windows.shape[0]
    meter = ProgressMeter("kl", n)
    total_kl, agree, positions = 0.0, 0, 0
    with eval_mode(student, teacher):
        for first in range(0, n, batch_size):
            with torch.inference_mode():
                batch = windows[first:first + batch_size]
                t_logits = _logits(teacher(input_ids=batch.to(t_device), use_cache=False)).to(s_device)
                s_logits = _logits(student(input_ids=batch.to(s_device), use_cache=False))
                if t_logits.shape[-1] != s_logits.shape[-1]:
                    raise StudioError(f"The teacher predicts {t_logits.shape[-1]} tokens but the student "
                                      f"{s_logits.shape[-1]}; compare models that share a tokenizer.")
                for row in range(batch.shape[0]):
                    log_t = F.log_softmax(t_logits[row].float() / temperature, dim=-1)
                    log_s = F.log_softmax(s_logits[row].float() / temperature, dim=-1)
                    kl = F.kl_div(log_s, log_t, log_target=True, reduction="sum")
                    total_kl += float(kl.double())
                    agree += int((t_logits[row].argmax(-1) == s_logits[row].argmax(-1)).sum())
                    positions += batch.shape[1]
                del t_logits, s_logits
            event = meter.update(min(first + batch_size, n))
            if event:
                yield event
    # KL is never negative; the clamp only removes float rounding below zero.
    return KLResult(kl_per_token=max(0.0, total_kl / positions), top1_agreement=agree / positions,
                    tokens=positions)


def kl_to_teacher(student: torch.nn.Module, teacher: torch.nn.Module, windows: torch.Tensor,
                  batch_size: int = 4, temperature: float = 1.0) -> KLResult:
    """:func:`iter_kl_to_teacher` without the progress events."""
    return drain(iter_kl_to_teacher(student, teacher, windows, batch_size, temperature))
