"""Scoring the choices of a multiple-choice question in one forward pass: tokenizing and packing.

Tokenizing follows lm-evaluation-harness 0.4.x (``TemplateLM._encode_pair`` and ``HFLM.tok_encode``):
trailing spaces of the context move to the continuation; ``context + continuation`` is tokenized
as one string with the tokenizer's own special-token default (a BOS only where the tokenizer adds
one) and the context's own token count is split off the front; the model reads
``(context + continuation)[-(max_length + 1):][:-1]``.

lm-eval then runs one sequence per choice, so the context is computed once per choice.  Here a
question is *packed*: the context once, then every choice's tokens after it (all but each
choice's last token, which is never read), each choice attending to the whole context and to its
own earlier tokens only, with position ids that continue from the context for every choice (a
4-D attention mask: the same arithmetic per position as lm-eval's separate sequences).  The first
token of every choice is predicted from the context's last position, which the choices share.
A question too long for the model's context falls back to one left-truncated sequence per choice,
exactly as lm-eval truncates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from core.errors import DataError

DEFAULT_MAX_LENGTH = 2048  # lm-eval's default when neither the config nor the tokenizer says
_TOKENIZER_UNSET = 10**20  # transformers' "no limit" model_max_length is ~1e30


@dataclass(frozen=True)
class EncodedChoices:
    """One question's token ids: the context and each choice's continuation."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class PackedSequence:
    """One model input: a context with continuations after it (one per choice, or one alone).

    ``targets[i]`` are the ids continuation ``i`` is scored on and ``sources[i]`` the positions
    whose logits predict them.  ``question`` and ``choices`` say which log-likelihoods it fills in.
    """

    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    branch: tuple[int, ...]  # -1 for context tokens, else the index (within this sequence) of the continuation
    sources: tuple[tuple[int, ...], ...]
    targets: tuple[tuple[int, ...], ...]
    question: int
    choices: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.tokens)


def model_max_length(model: Any, tokenizer: Any) -> int:
    """The longest input lm-eval lets the model read (its ``resolve_max_length``)."""
    config = getattr(model, "config", None)
    for part in (getattr(config, "text_config", None), config):
        for attribute in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(part, attribute, None) if part is not None else None
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _TOKENIZER_UNSET:
        return limit
    return DEFAULT_MAX_LENGTH


def encode_choices(tokenizer: Any, context: str, choices: tuple[str, ...] | list[str]) -> EncodedChoices:
    """Token ids of ``context`` and of ``" " + choice`` after it, split as lm-eval splits them."""
    n_spaces = len(context) - len(context.rstrip())
    kept, moved = (context[:-n_spaces], context[-n_spaces:]) if n_spaces else (context, "")
    if not kept:
        raise DataError("A question's text is empty; every row needs a question to condition the answers on.")
    strings = [kept] + [kept + moved + " " + choice for choice in choices]
    encoded = tokenizer(strings)["input_ids"]
    context_ids = tuple(encoded[0])
    continuations = tuple(tuple(whole[len(context_ids):]) for whole in encoded[1:])
    if any(not c for c in continuations):
        raise DataError("An answer choice is empty after tokenizing; every choice needs some text.")
    return EncodedChoices(context_ids, continuations)


def pack_question(encoded: EncodedChoices, question: int, max_length: int, share_context: bool = True,
                  ) -> list[PackedSequence]:
    """The sequence(s) that score every choice of one question: one packed sequence, or (when
    ``share_context`` is off or the question does not fit) one sequence per choice, as lm-eval runs them."""
    context, continuations = encoded.context, encoded.continuations
    if share_context and all(len(context) + len(c) <= max_length + 1 for c in continuations):
        return [_packed(context, continuations, question, tuple(range(len(continuations))))]
    sequences = []
    for index, continuation in enumerate(continuations):
        if len(continuation) > max_length:
            raise DataError(f"An answer of {len(continuation)} tokens is longer than the model's context "
                            f"of {max_length} tokens.")
        whole = (context + continuation)[-(max_length + 1):]
        sequences.append(_packed(whole[:-len(continuation)], (continuation,), question, (index,)))
    return sequences


def _packed(context: tuple[int, ...], continuations: tuple[tuple[int, ...], ...], question: int,
            choices: tuple[int, ...]) -> PackedSequence:
    tokens, positions, branch = list(context), list(range(len(context))), [-1] * len(context)
    sources, targets = [], []
    for index, continuation in enumerate(continuations):
        start = len(tokens)
        read = continuation[:-1]  # the last token is only predicted, never read
        tokens += read
        positions += range(len(context), len(context) + len(read))
        branch += [index] * len(read)
        sources.append((len(context) - 1, *range(start, start + len(read))))
        targets.append(tuple(continuation))
    return PackedSequence(tuple(tokens), tuple(positions), tuple(branch), tuple(sources), tuple(targets),
                          question, choices)


def batch_tensors(sequences: list[PackedSequence], dtype: torch.dtype, pad_id: int = 0,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids`` [B, L], ``position_ids`` [B, L] and an additive attention mask [B, 1, L, L].

    Position i may read position j when j <= i and j is a context token or lies on i's own
    continuation.  Padding (on the right) reads only itself, so no row of the mask is empty.
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(sequences), width), dtype=torch.long)
    branch = torch.full((len(sequences), width), -2, dtype=torch.long)  # -2: padding
    for row, sequence in enumerate(sequences):
        n = len(sequence)
        ids[row, :n] = torch.tensor(sequence.tokens)
        positions[row, :n] = torch.tensor(sequence.positions)
        branch[row, :n] = torch.tensor(sequence.branch)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    reader, read = branch[:, :, None], branch[:, None, :]
    allowed = causal & ((read == -1) | (read == reader)) & (read != -2)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding reads itself
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return ids, positions, mask[:, None]
