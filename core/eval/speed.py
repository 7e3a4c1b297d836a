"""Speed and sample measurements for causal LMs: prefill latency, decode throughput, completions.

Everything runs on the model's own device, in eval mode, under ``torch.inference_mode()``
(entered per step, never across a ``yield``), timed with ``time.perf_counter`` after
synchronising the device so queued GPU work is counted.  Generation is greedy and therefore
deterministic for a deterministic model.
"""

from __future__ import annotations

import contextlib
import inspect
import statistics
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from core.errors import StudioError
from core.eval.perplexity import eval_mode, model_device
from core.events import Progress, ProgressMeter, drain

# The speed prompt is this text, tokenized without special tokens and repeated / cut to length,
# so every model with the same tokenizer is timed on exactly the same token ids.
SPEED_TEXT = (
    "Language models turn text into tokens and predict the next token from the ones before it. "
    "Smaller models answer faster and fit on modest hardware, so compression trades a little "
    "quality for a lot of speed and memory. "
)


def _sync(device: torch.device) -> None:
    """Wait for queued work on the device, so a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _check_context(model: torch.nn.Module, tokens: int) -> None:
    max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(max_positions, int) and tokens > max_positions:
        raise StudioError(f"{tokens} tokens do not fit the model's context of {max_positions}; "
                          "use a shorter prompt or fewer new tokens.")


def speed_prompt_ids(tokenizer: Any, prompt_tokens: int) -> torch.Tensor:
    """The fixed speed prompt as a [1, prompt_tokens] tensor of token ids."""
    ids = tokenizer(SPEED_TEXT, add_special_tokens=False)["input_ids"]
    if not ids:
        raise StudioError("The tokenizer turned the speed prompt into no tokens; check the tokenizer.")
    repeated = ids * (prompt_tokens // len(ids) + 1)
    return torch.tensor([repeated[:prompt_tokens]], dtype=torch.long)


@dataclass
class SpeedResult:
    """Median prefill latency and decode throughput over ``repeats`` timed runs."""

    prefill_ms: float  # median time of one forward pass over the prompt, building the KV cache
    decode_tokens_per_s: float  # median of new_tokens / time of new_tokens cached one-token steps
    prompt_tokens: int
    new_tokens: int
    repeats: int
    runs: list[dict[str, float]] = field(default_factory=list)  # each timed run's two figures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iter_measure_speed(model: torch.nn.Module, tokenizer: Any, prompt_tokens: int = 128, new_tokens: int = 32,
                       repeats: int = 3, warmup: int = 1) -> Generator[Progress, None, SpeedResult]:
    """Time prefill and greedy decoding with the KV cache, yielding progress.

    Each run (batch of one, the prompt from :func:`speed_prompt_ids`):

    * prefill: one forward pass over all ``prompt_tokens`` tokens with ``use_cache=True``
      (computing only the last position's logits where the model supports ``logits_to_keep``,
      as ``generate`` does); its wall time is ``prefill_ms``;
    * decode: ``new_tokens`` forward passes of one token each, each feeding the greedy (argmax)
      token of the previous step and extending the cache; throughput = new_tokens / their total
      wall time.  EOS never stops the loop, so every run decodes exactly ``new_tokens`` tokens.

    ``warmup`` untimed runs come first; the result holds the median of the ``repeats`` timed
    runs for each figure separately, and every timed run in ``runs``.
    """
    if prompt_tokens < 1 or new_tokens < 1 or repeats < 1 or warmup < 0:
        raise StudioError("Prompt tokens, new tokens and repeats must be at least 1, warm-up runs at least 0.")
    _check_context(model, prompt_tokens + new_tokens)
    device = model_device(model)
    prompt = speed_prompt_ids(tokenizer, prompt_tokens).to(device)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    meter = ProgressMeter("speed", warmup + repeats)
    runs: list[dict[str, float]] = []
    with eval_mode(model):
        for run in range(warmup + repeats):
            with torch.inference_mode():
                _sync(device)
                start = time.perf_counter()
                out = model(input_ids=prompt, use_cache=True, **extra)
                _sync(device)
                prefill_s = time.perf_counter() - start
                past, token = out.past_key_values, out.logits[:, -1:].argmax(dim=-1)
                if past is None:
                    raise StudioError("This model returns no KV cache, so its decode speed cannot be measured; "
                                      "speed needs a causal language model.")
                start = time.perf_counter()
                for _ in range(new_tokens):
                    out = model(input_ids=token, past_key_values=past, use_cache=True)
                    past, token = out.past_key_values, out.logits[:, -1:].argmax(dim=-1)
                _sync(device)
                decode_s = time.perf_counter() - start
                del out, past
            if run >= warmup:
                runs.append({"prefill_ms": prefill_s * 1000.0, "decode_tokens_per_s": new_tokens / decode_s})
            event = meter.update(run + 1)
            if event:
                yield event
    return SpeedResult(prefill_ms=statistics.median(r["prefill_ms"] for r in runs),
                       decode_tokens_per_s=statistics.median(r["decode_tokens_per_s"] for r in runs),
                       prompt_tokens=prompt_tokens, new_tokens=new_tokens, repeats=repeats, runs=runs)


def measure_speed(model: torch.nn.Module, tokenizer: Any, prompt_tokens: int = 128, new_tokens: int = 32,
                  repeats: int = 3, warmup: int = 1) -> SpeedResult:
    """:func:`iter_measure_speed` without the progress events."""
    return drain(iter_measure_speed(model, tokenizer, prompt_tokens, new_tokens, repeats, warmup))


# ----------------------------------------------------------------------------------- samples
@dataclass
class Sample:
    """One greedy completion of a prompt."""

    prompt: str  # the prompt as given (before any chat template)
    completion: str  # the generated text only, special tokens removed
    new_tokens: int  # tokens actually generated, an EOS that ended the completion included
    seconds: float  # wall time of the whole generate call (prefill + decode)
    tokens_per_s: float  # new_tokens / seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template (``use_chat_template`` needs one)."""
    return bool(getattr(tokenizer, "chat_template", None))


def _greedy_config(model: torch.nn.Module, tokenizer: Any, max_new_tokens: int, stop_at_eos: bool) -> Any:
    """Plain greedy decoding: only the model's special-token ids are kept from its own
    generation config (so a chat model still stops at each of its EOS tokens); its sampling
    flags, length limits and penalties are left out, so every model is sampled the same way."""
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    ids = {k: getattr(base, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id",
                                               "decoder_start_token_id")}
    if ids["eos_token_id"] is None:
        ids["eos_token_id"] = tokenizer.eos_token_id
    if ids["pad_token_id"] is None:
        ids["pad_token_id"] = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ids["eos_token_id"]
    return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                            min_new_tokens=None if stop_at_eos else max_new_tokens, **ids)


@contextlib.contextmanager
def _generation_config(model: torch.nn.Module, config: Any) -> Iterator[None]:
    """Make ``config`` the model's generation config for one call.

    ``generate`` fills every unset field of the config it is given from
    ``model.generation_config``, which would bring back the model's sampling flags (and
    transformers' warnings that greedy decoding ignores them); swapping it in avoids both.
    """
    original = getattr(model, "generation_config", None)
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = original


def iter_generate_samples(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 48,
                          use_chat_template: bool = False, stop_at_eos: bool = True,
                          ) -> Generator[Progress, None, list[Sample]]:
    """Complete each prompt greedily (``do_sample=False``), one prompt at a time, yielding progress.

    With ``use_chat_template`` the prompt is wrapped as a single user message with the
    tokenizer's chat template (and the assistant turn opened); otherwise it is tokenized as is.
    Generation stops at ``max_new_tokens`` or at EOS; with ``stop_at_eos=False`` EOS is
    suppressed so exactly ``max_new_tokens`` tokens are generated.
    """
    if max_new_tokens < 1:
        raise StudioError(f"Max new tokens must be at least 1, got {max_new_tokens}.")
    if use_chat_template and not has_chat_template(tokenizer):
        raise StudioError("This tokenizer has no chat template; turn off 'use chat template'.")
    if not hasattr(model, "generate"):
        raise StudioError("This model cannot generate text; samples need a causal language model.")
    device = model_device(model)
    config = _greedy_config(model, tokenizer, max_new_tokens, stop_at_eos)
    meter = ProgressMeter("samples", len(prompts))
    samples: list[Sample] = []
    with eval_mode(model):
        for prompt in prompts:
            if use_chat_template:
                text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                     add_generation_prompt=True)
                encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt")
            else:
                encoded = tokenizer(prompt, return_tensors="pt")
            encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
            _check_context(model, encoded["input_ids"].shape[1] + max_new_tokens)
            with torch.inference_mode():
                _sync(device)
                start = time.perf_counter()
                with _generation_config(model, config):
                    output = model.generate(**encoded, generation_config=config)
                _sync(device)
                seconds = time.perf_counter() - start
            new_ids = output[0, encoded["input_ids"].shape[1]:]
            samples.append(Sample(prompt=prompt, completion=tokenizer.decode(new_ids, skip_special_tokens=True),
                                  new_tokens=len(new_ids), seconds=seconds,
                                  tokens_per_s=len(new_ids) / seconds if seconds > 0 else 0.0))
            event = meter.update(len(samples))
            if event:
                yield event
    return samples


def generate_samples(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 48,
                     use_chat_template: bool = False, stop_at_eos: bool = True) -> list[Sample]:
    """:func:`iter_generate_samples` without the progress events."""
    return drain(iter_generate_samples(model, tokenizer, prompts, max_new_tokens, use_chat_template, stop_at_eos))
