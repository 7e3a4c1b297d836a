"""Which tokens a perplexity measurement reads and which it scores: the field's three conventions.

Perplexity depends on how a text is cut into the windows a model reads.  A person compares our number
with a published one only if both were cut the same way, so the evaluation offers the three in use:

* ``transformers`` (the default): the documents as one stream of ids (:func:`core.data.texts.token_stream`:
  the beginning-of-text token where the tokenizer adds one, end-of-text between documents), cut into
  non-overlapping windows of L tokens, each read on its own; every token but a window's first is
  predicted.  This is transformers' perplexity guide with ``stride = max_length``, and what GPTQ,
  SparseGPT and Wanda report.  The incomplete tail is dropped.
* ``lm-eval``: lm-evaluation-harness's rolling log-likelihood (``loglikelihood_rolling``, used by its
  wikitext task): each document on its own, every one of its tokens predicted, the first from a prefix
  token (the tokenizer's BOS, else its EOS); windows of L predictions, each after the first starting
  with the last token the previous one predicted, the document's tail read with a full window of context.
* ``llama.cpp``: ``llama-perplexity``: the stream cut into chunks of L tokens, the first token of each
  chunk replaced by BOS where the model adds one, and only the second half of each chunk scored (every
  scored token has at least L/2 tokens of context, so this convention gives the lowest numbers).

Every window is stored as a row of ``tokens``: the model reads ``tokens[:, :-1]`` and is scored on
predicting ``tokens[i, 1 + first_scored[i] : lengths[i]]``.  Rows shorter than the longest are padded on
the right, which a causal model never sees from earlier positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.data.conventions import CONVENTIONS
from core.data.texts import (
    check_window_request,
    document_separator,
    encode_document,
    leading_special_ids,
    token_stream,
)
from core.errors import DataError

__all__ = ["CONVENTIONS", "PerplexityWindows", "perplexity_windows"]


@dataclass
class PerplexityWindows:
    """Token windows to score, and how they were cut (see the module docstring)."""

    tokens: torch.LongTensor  # [n, T]: the model reads tokens[:, :-1]
    first_scored: list[int]  # per row: predictions of tokens[i, 1 + first_scored[i]:lengths[i]] count
    lengths: list[int]  # per row: how many of its T ids are real (the rest is right padding)
    convention: str  # one of CONVENTIONS
    description: str  # the convention in a sentence, for the report

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def scored_tokens(self) -> int:
        """How many predictions count towards the perplexity."""
        return sum(length - 1 - first for length, first in zip(self.lengths, self.first_scored, strict=True))

    @classmethod
    def plain(cls, windows: torch.LongTensor) -> PerplexityWindows:
        """Equal windows each scored from its second token (the ``transformers`` convention)."""
        n, length = windows.shape
        return cls(windows, [0] * n, [length] * n, "transformers",
                   f"{n} windows of {length} tokens, each read on its own; every token but a window's first "
                   "is predicted")


def perplexity_windows(texts: list[str], tokenizer, sequence_length: int, max_windows: int | None = None,
                       convention: str = "transformers") -> PerplexityWindows:
    """Cut ``texts`` into the windows ``convention`` scores, at most ``max_windows`` of them.

    ``sequence_length`` is the window the model reads: L tokens in every convention.
    """
    check_window_request(sequence_length, max_windows)
    if convention not in CONVENTIONS:
        raise DataError(f"Unknown perplexity convention '{convention}'; choose one of {', '.join(CONVENTIONS)}.")
    if convention == "lm-eval":
        return _rolling(texts, tokenizer, sequence_length, max_windows)
    needed = None if max_windows is None else max_windows * sequence_length
    stream = token_stream(texts, tokenizer, needed)
    count = len(stream) // sequence_length
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise DataError(f"The text is too short: it has {len(stream)} tokens but one window needs "
                        f"{sequence_length}; use more text or a shorter sequence length.")
    tokens = torch.tensor(stream[:count * sequence_length], dtype=torch.long).view(count, sequence_length)
    documents = _documents_phrase(texts, tokenizer)
    if convention == "transformers":
        windows = PerplexityWindows.plain(tokens)
        windows.description = (f"transformers' convention: {windows.description} ({documents}; the incomplete "
                               "tail is not scored)")
        return windows
    lead = leading_special_ids(tokenizer)
    if lead:  # llama.cpp puts BOS at the start of every chunk, in place of the chunk's first token
        tokens[:, 0] = lead[-1]
    half = sequence_length // 2
    begin = f"the first token of each replaced by {_name(tokenizer, lead[-1])}" if lead else "read as they are"
    return PerplexityWindows(tokens, [half] * count, [sequence_length] * count, convention,
                             f"llama.cpp's convention: {count} chunks of {sequence_length} tokens, {begin}; only "
                             f"the second half of each chunk is scored, after at least {half} tokens of context, "
                             f"which gives lower numbers than the other conventions ({documents})")


def _rolling(texts: list[str], tokenizer, length: int, max_windows: int | None) -> PerplexityWindows:
    """lm-eval's rolling windows: every token of every document predicted (``get_rolling_token_windows``
    with ``context_len=1``)."""
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if prefix is None:
        raise DataError("The lm-eval convention needs a beginning- or end-of-text token to predict a document's "
                        "first token from, and this tokenizer has neither; choose the transformers convention.")
    rows: list[tuple[list[int], int]] = []  # (ids the model reads plus the last target, first scored target)
    budget = None if max_windows is None else max_windows * length
    documents = 0
    for text in texts:
        ids = encode_document(tokenizer, text, budget)
        if not ids:
            continue
        documents += 1
        first = min(length, len(ids))
        rows.append(([prefix] + ids[:first], 0))
        predicted = first
        while predicted < len(ids):
            step = min(len(ids) - predicted, length)
            end = predicted + step
            # the window reads the `length` ids before `end` (fewer at a document's start) and scores the
            # last `step` of its predictions
            start = max(0, end - length - 1)
            rows.append((ids[start:end], end - start - 1 - step))
            predicted = end
        if max_windows is not None and len(rows) >= max_windows:
            rows = rows[:max_windows]
            break
        if budget is not None:
            budget = max(1, budget - len(ids))
    if not rows:
        raise DataError("The text holds no tokens to score.")
    width = max(len(ids) for ids, _ in rows)
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (ids, _) in enumerate(rows):
        tokens[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return PerplexityWindows(tokens, [first for _, first in rows], [len(ids) for ids, _ in rows], "lm-eval",
                             f"lm-eval's convention (rolling log-likelihood): each of {documents} document(s) on "
                             f"its own, every token predicted, the first from {_name(tokenizer, prefix)}; "
                             f"{len(rows)} windows of up to {length} tokens")


def _documents_phrase(texts: list[str], tokenizer) -> str:
    lead = leading_special_ids(tokenizer)
    begin = (f"{_name(tokenizer, lead[-1])} at the start, as this tokenizer adds it" if lead
             else "no beginning-of-text token, as this tokenizer adds none")
    count = sum(1 for t in texts if t)
    if count == 1:
        return f"the text as one document, {begin}"
    separator = document_separator(tokenizer)
    joined = f"joined by {_name(tokenizer, separator)}" if separator is not None else "joined directly"
    return f"{count} documents {joined}, {begin}"


def _name(tokenizer, token_id: int) -> str:
    return tokenizer.convert_ids_to_tokens(int(token_id)) or f"token {token_id}"
