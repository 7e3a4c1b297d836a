"""Texts longer than a classifier reads: which part is kept (head, tail or both), as token ids.

Shared by the classifier steps (training and scoring their splits) and by the runner's before/after
measurement, so that both read exactly the same tokens of every text.
"""

from __future__ import annotations

from core.errors import RecipeError

KEEP = ("head", "tail", "head+tail")
PART_KEPT = {"head": "their beginning", "tail": "their end", "head+tail": "their beginning and their end"}


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The token ids the tokenizer puts before and after one text (e.g. [CLS] and [SEP])."""
    body = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(body) + 1):
        if full[start:start + len(body)] == body:
            return full[:start], full[start + len(body):]
    return [], []


def encode_texts(tokenizer, texts: list[str], max_length: int, keep: str = "head") -> tuple[list[list[int]], int]:
    """Token ids of each text (special tokens included, at most ``max_length``) and how many texts were cut.

    A text longer than the room left by the special tokens keeps its first tokens (head), its last
    (tail), or the first half and the last half of that room (head+tail; the head gets the odd token).
    """
    if keep not in KEEP:
        raise RecipeError(f"keep must be one of {', '.join(KEEP)}, not {keep!r}")
    before, after = special_tokens(tokenizer)
    room = max(1, max_length - len(before) - len(after))
    ids, cut = [], 0
    for row in tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]:
        if len(row) > room:
            cut += 1
            front = room if keep == "head" else 0 if keep == "tail" else (room + 1) // 2
            row = row[:front] + row[len(row) - (room - front):]
        ids.append(before + row + after)
    return ids, cut
