"""Zero-shot task accuracy, scored as lm-evaluation-harness 0.4.x scores multiple-choice tasks.

For each question the model's log-likelihood of every choice (``" " + choice`` after the context)
is summed over the choice's tokens.  Then, per question:

* ``acc``: 1 when the choice with the highest summed log-likelihood is the right one;
* ``acc_norm``: the same with each log-likelihood divided by the choice's length in characters
  (without the leading space), lm-eval's length normalisation;

and per task the mean of each with its standard error, the sample standard deviation (n - 1)
divided by sqrt(n) (lm-eval's ``mean_stderr``).  The headline figure is ``acc`` for BoolQ and
``acc_norm`` for the others, as papers quote them.  Tokenizing, truncation and packing are in
:mod:`core.eval.choice_packing`; log-softmax is taken in float32 and sums kept in float64.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from core.data.task_rows import TASKS, ChoiceQuestion, load_task, pick_questions, task_title
from core.errors import DataError
from core.eval.choice_packing import (
    PackedSequence,
    batch_tensors,
    encode_choices,
    model_max_length,
    pack_question,
)
from core.eval.perplexity import _logits, eval_mode, model_device
from core.events import Log, ProgressMeter, drain

# Tokens per forward pass (batch rows x padded length).  On 2 CPU cores 1,024 beat 512, 2,048 and 4,096
# by 4-40% (PIQA, SmolLM2-135M); an accelerator wants larger batches.
TOKEN_BUDGET = {"cpu": 1024, "accelerator": 8192}
SELF_CHECK_TOLERANCE = 1e-3  # nats: packed and separate scoring of one question must agree this well


@dataclass
class TaskScore:
    """A task's accuracy on the questions scored (all of them, or a seeded subset)."""

    task: str
    title: str
    n: int  # questions scored
    rows_total: int  # questions in the task
    acc: float
    acc_stderr: float
    acc_norm: float
    acc_norm_stderr: float
    headline: str  # "acc" or "acc_norm"
    chance: float | None  # accuracy of guessing (None for a person's own file with varying choices)
    seconds: float
    subset: str  # "all", or how the subset was drawn
    answers: str = ""  # per question, in order: "1" where the headline figure counts it right, else "0"
    loglikelihoods: list[list[float]] = field(default_factory=list, repr=False)  # per question, per choice
    golds: list[int] = field(default_factory=list, repr=False)
    ids: list[str] = field(default_factory=list, repr=False)

    @property
    def headline_value(self) -> float:
        return self.acc if self.headline == "acc" else self.acc_norm

    @property
    def headline_stderr(self) -> float:
        return self.acc_stderr if self.headline == "acc" else self.acc_norm_stderr

    def to_dict(self, with_rows: bool = False) -> dict[str, Any]:
        data = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        data["stderr"] = data["acc_stderr" if self.headline == "acc" else "acc_norm_stderr"]
        if not with_rows:
            for key in ("loglikelihoods", "golds", "ids"):
                data.pop(key)
        return data


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and lm-eval's standard error of the mean: sample standard deviation / sqrt(n)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance) / math.sqrt(n)


def _argmax(values: list[float]) -> int:
    """numpy's argmax: the first of equal maxima."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def choice_predictions(loglikelihoods: list[float], choices: tuple[str, ...]) -> tuple[int, int]:
    """The choice ``acc`` picks and the one ``acc_norm`` picks (log-likelihood per character)."""
    normalised = [ll / len(choice) for ll, choice in zip(loglikelihoods, choices, strict=True)]
    return _argmax(loglikelihoods), _argmax(normalised)


# ----------------------------------------------------------------------------- scoring

def iter_choice_loglikelihoods(model: torch.nn.Module, tokenizer: Any, questions: list[ChoiceQuestion], *,
                               token_budget: int | None = None, share_context: bool = True,
                               max_length: int | None = None, stage: str = "tasks",
                               ) -> Generator[Any, None, list[list[float]]]:
    """Summed log-likelihood of every choice of every question, yielding progress.

    Questions are packed (see :mod:`core.eval.choice_packing`) unless ``share_context`` is off,
    then batched longest first under ``token_budget`` tokens per forward pass (default: by the
    model's device, ``TOKEN_BUDGET``).  ``max_length`` (default: the model's context, as lm-eval
    resolves it) is where inputs are cut.  Before packing,
    one question is scored both ways; a model whose attention ignores the packed mask (it gives
    different numbers) is scored one sequence per choice instead, with a Log saying so.
    """
    if token_budget is None:
        token_budget = TOKEN_BUDGET["cpu" if model_device(model).type == "cpu" else "accelerator"]
    if token_budget < 1:
        raise DataError(f"The token budget must be at least 1, got {token_budget}.")
    max_length = max_length or model_max_length(model, tokenizer)
    encoded = [encode_choices(tokenizer, q.context, q.choices) for q in questions]
    if share_context and questions and not _packing_agrees(model, encoded, max_length):
        yield Log("This model's attention ignores custom masks: scoring each answer choice separately (slower).")
        share_context = False
    sequences = [s for i, e in enumerate(encoded) for s in pack_question(e, i, max_length, share_context)]
    sums = [[0.0] * len(q.choices) for q in questions]
    meter = ProgressMeter(stage, sum(len(s) for s in sequences))
    done = 0
    with eval_mode(model):
        for batch in _batches(sequences, token_budget):
            _score_batch(model, batch, sums)
            done += sum(len(s) for s in batch)
            event = meter.update(done)
            if event:
                yield event
    return sums


def _packing_agrees(model, encoded, max_length) -> bool:
    """Whether packed scoring of the first question that needs the packing mask (two or more choices of
    several tokens) equals one-sequence-per-choice scoring."""
    probe = next((i for i, e in enumerate(encoded) if sum(len(c) > 1 for c in e.continuations) > 1), None)
    if probe is None:
        return True  # no question puts two choices side by side: plain causal attention scores them all
    results = []
    for share in (True, False):
        sums = [[0.0] * len(encoded[probe].continuations)]
        with eval_mode(model):
            for sequence in pack_question(encoded[probe], 0, max_length, share):
                _score_batch(model, [sequence], sums)
        results.append(sums[0])
    return all(abs(a - b) <= SELF_CHECK_TOLERANCE * max(1.0, abs(b)) for a, b in zip(*results, strict=True))


def _batches(sequences: list[PackedSequence], budget: int) -> list[list[PackedSequence]]:
    """Longest first; a batch holds rows while rows x longest stays within the budget (at least one row)."""
    ordered = sorted(sequences, key=lambda s: -len(s))
    batches: list[list[PackedSequence]] = []
    for sequence in ordered:
        if batches and (len(batches[-1]) + 1) * len(batches[-1][0]) <= budget:
            batches[-1].append(sequence)
        else:
            batches.append([sequence])
    return batches


def _score_batch(model, batch: list[PackedSequence], sums: list[list[float]]) -> None:
    """Add the log-likelihoods of a batch's scored tokens to ``sums[question][choice]``."""
    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    ids, positions, mask = batch_tensors(batch, dtype)
    rows, sources, targets, slots = [], [], [], []
    for row, sequence in enumerate(batch):
        for branch, choice in enumerate(sequence.choices):
            count = len(sequence.targets[branch])
            rows += [row] * count
            sources += sequence.sources[branch]
            targets += sequence.targets[branch]
            slots += [(sequence.question, choice)] * count
    # Only the positions that predict a scored token need logits (the output layer is a fifth of a
    # small model's work); transformers' logits_to_keep computes just those, for any head.
    kept = sorted(set(sources))
    column = {position: index for index, position in enumerate(kept)}
    keep = _keeps_logits(model)
    kwargs = {"logits_to_keep": torch.tensor(kept, device=device)} if keep else {}
    if any(len(set(s.branch) - {-1}) > 1 for s in batch):  # choices side by side: keep them apart
        kwargs.update(position_ids=positions.to(device), attention_mask=mask.to(device))
    # else every sequence is plain causal text (right padding is never read): attention's fast causal path
    with torch.inference_mode():
        logits = _logits(model(input_ids=ids.to(device), use_cache=False, **kwargs))
        columns = [column[s] for s in sources] if keep else sources
        picked = logits[torch.tensor(rows, device=device), torch.tensor(columns, device=device)]
        del logits
        token_ll = F.log_softmax(picked.float(), dim=-1).gather(1, torch.tensor(targets, device=device)[:, None])
        values = token_ll.squeeze(1).double().cpu().tolist()
    for (question, choice), value in zip(slots, values, strict=True):
        sums[question][choice] += value


def _keeps_logits(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers' causal LMs since 4.50)."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def score_questions(task: str, questions: list[ChoiceQuestion], loglikelihoods: list[list[float]], *,
                    rows_total: int, seconds: float, subset: str) -> TaskScore:
    """A task's accuracy from every question's choice log-likelihoods."""
    accs, norms = [], []
    for question, lls in zip(questions, loglikelihoods, strict=True):
        pred, pred_norm = choice_predictions(lls, question.choices)
        accs.append(float(pred == question.gold))
        norms.append(float(pred_norm == question.gold))
    acc, acc_stderr = mean_and_stderr(accs)
    acc_norm, acc_norm_stderr = mean_and_stderr(norms)
    info = TASKS.get(task)
    choice_counts = {len(q.choices) for q in questions}
    chance = info.chance if info else (1.0 / choice_counts.pop() if len(choice_counts) == 1 else None)
    headline = info.headline if info else "acc"
    answers = "".join(str(int(v)) for v in (accs if headline == "acc" else norms))
    return TaskScore(task, task_title(task), len(questions), rows_total, acc, acc_stderr, acc_norm, acc_norm_stderr,
                     headline, chance, seconds, subset, answers, loglikelihoods,
                     [q.gold for q in questions], [q.id for q in questions])


def iter_task_accuracy(model: torch.nn.Module, tokenizer: Any, task: str, limit: int | None = None, seed: int = 0,
                       token_budget: int | None = None) -> Generator[Any, None, TaskScore]:
    """Accuracy of a causal LM on one task (a bundled name or a person's .jsonl), yielding progress.

    ``limit`` scores a seeded random subset of that many questions (the quick mode); None scores all.
    """
    started = time.perf_counter()
    every = load_task(task)
    questions = pick_questions(every, limit, seed)
    subset = "all" if len(questions) == len(every) else f"{len(questions)} of {len(every)} drawn at random (seed {seed})"
    yield Log(f"{task_title(task)}: scoring {len(questions)} questions")
    lls = yield from iter_choice_loglikelihoods(model, tokenizer, questions, token_budget=token_budget,
                                                stage=f"task {task_title(task)}")
    return score_questions(task, questions, lls, rows_total=len(every), seconds=time.perf_counter() - started,
                           subset=subset)


def iter_tasks(model: torch.nn.Module, tokenizer: Any, tasks: list[str], limit: int | None = None, seed: int = 0,
               ) -> Generator[Any, None, dict[str, TaskScore]]:
    """:func:`iter_task_accuracy` for several tasks, in order; a dict by task name."""
    scores = {}
    for task in tasks:
        scores[task] = yield from iter_task_accuracy(model, tokenizer, task, limit, seed)
    return scores


def task_accuracy(model: torch.nn.Module, tokenizer: Any, task: str, limit: int | None = None, seed: int = 0,
                  ) -> TaskScore:
    """:func:`iter_task_accuracy` without the events."""
    return drain(iter_task_accuracy(model, tokenizer, task, limit, seed))


