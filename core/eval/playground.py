"""The generation playground: one prompt, two models (teacher and student), greedy answers side by side.

:func:`iter_load_pair` loads the run's source model (the teacher) and its output folder (the
student) with the normal loader, which understands our saved formats.  :func:`greedy_answer`
completes a prompt greedily and times it: the wall time to the first new token (prefill) and the
decode speed of the tokens after it, measured from the moment each token is produced (a streamer
records the time of every token), so the speeds of both models are measured the same way.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.errors import StudioError
from core.eval.compare import Divergence, token_divergence
from core.eval.perplexity import eval_mode, model_device
from core.eval.speed import _check_context, _generation_config, _greedy_config, _sync
from core.events import Log, Progress
from core.models.loading import iter_load_model


@dataclass
class ModelPair:
    teacher: Any  # core.models.loading.LoadedModel
    student: Any
    teacher_source: str
    student_folder: str


@dataclass
class Answer:
    """One greedy completion with its tokens and measured timings."""

    text: str
    token_ids: list[int]
    tokens: list[str]  # each new token decoded on its own (for marking)
    first_token_ms: float  # prompt processing + first token
    decode_tokens_per_s: float | None  # tokens after the first / their time; None with fewer than 2 tokens
    seconds: float
    special: list[bool] = field(default_factory=list)  # per token: a special token (e.g. <|im_end|>), not text

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "tokens": self.tokens, "first_token_ms": self.first_token_ms,
                "decode_tokens_per_s": self.decode_tokens_per_s, "seconds": self.seconds}


@dataclass
class PlaygroundResult:
    prompt: str
    teacher: Answer
    student: Answer
    divergence: Divergence = field(repr=False)


class _TimingStreamer:
    """A ``generate`` streamer that only records when each batch of tokens arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt, before any work
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def iter_load_pair(teacher_source: str, student_folder: str | Path, task: str = "causal-lm",
                   device: str = "cpu") -> Generator[Any, None, ModelPair]:
    """Load teacher and student (yielding the loader's events); refuse models that cannot generate."""
    if task != "causal-lm":
        raise StudioError("the playground needs causal language models (text generation); this run compressed a "
                          "classifier, whose answers are labels: compare its accuracy in the table instead")
    yield Log(f"Loading the teacher: {teacher_source}")
    teacher = yield from iter_load_model(teacher_source, task, trust_remote_code=False, device=device)
    yield Log(f"Loading the student: {student_folder}")
    student = yield from iter_load_model(str(student_folder), task, trust_remote_code=False, device=device)
    return ModelPair(teacher, student, teacher_source, str(student_folder))


def greedy_answer(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 32) -> Answer:
    """Complete ``prompt`` greedily (stops at EOS or ``max_new_tokens``) and time it."""
    if not prompt.strip():
        raise StudioError("the prompt is empty: type a few words for both models to continue")
    if max_new_tokens < 1:
        raise StudioError(f"new tokens must be at least 1, got {max_new_tokens}")
    if not hasattr(model, "generate"):
        raise StudioError("this model cannot generate text")
    device = model_device(model)
    encoded = tokenizer(prompt, return_tensors="pt")
    encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
    _check_context(model, encoded["input_ids"].shape[1] + max_new_tokens)
    config = _greedy_config(model, tokenizer, max_new_tokens, stop_at_eos=True)
    streamer = _TimingStreamer()
    with eval_mode(model), torch.inference_mode(), _generation_config(model, config):
        _sync(device)
        start = time.perf_counter()
        output = model.generate(**encoded, generation_config=config, streamer=streamer)
        _sync(device)
        seconds = time.perf_counter() - start
    ids = [int(i) for i in output[0, encoded["input_ids"].shape[1]:]]
    times = streamer.times[:len(ids)]
    first_ms = ((times[0] - start) if times else seconds) * 1000.0
    decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else None
    tokens = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    return Answer(tokenizer.decode(ids, skip_special_tokens=True), ids, tokens, first_ms, decode, seconds,
                  special_token_mask(tokenizer, ids))


def special_token_mask(tokenizer: Any, ids: list[int]) -> list[bool]:
    """For each token id, whether it is one of the tokenizer's special tokens (end of text, padding, chat
    markers such as ``<|im_end|>``): control signals, not text to show a person."""
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    return [i in special for i in ids]


def iter_compare_answers(pair: ModelPair, prompt: str, max_new_tokens: int = 32,
                         ) -> Generator[Any, None, PlaygroundResult]:
    """Both models answer ``prompt``; the result marks where their tokens diverge."""
    yield Progress("answering", 0, 2)
    teacher = greedy_answer(pair.teacher.model, pair.teacher.tokenizer, prompt, max_new_tokens)
    yield Progress("answering", 1, 2)
    student = greedy_answer(pair.student.model, pair.student.tokenizer, prompt, max_new_tokens)
    yield Progress("answering", 2, 2)
    return PlaygroundResult(prompt, teacher, student, token_divergence(teacher.token_ids, student.token_ids))
