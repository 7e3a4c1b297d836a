"""Plain words instead of jargon (issue 16, item 8), with made-up numbers and the tiny tokenizer.

Bits per weight say what they measure (on disk for a 4-bit file, in memory once loaded); the
playground says where two answers part in plain English with correct plurals and never shows a raw
special token such as ``<|im_end|>``; KL's unit, nats per token, is explained.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402

from core.eval.compare import KL_EXPLANATION, compare_rows, divergence_sentence, token_divergence  # noqa: E402
from core.eval.playground import special_token_mask  # noqa: E402
from core.models.model_info import ModelSummary  # noqa: E402
from gui.screens.compare.playground import Playground  # noqa: E402
from gui.screens.history.compare import EXPLAIN  # noqa: E402
from gui.screens.model.summary import summary_texts  # noqa: E402
from gui.screens.run.summary import summary_rows  # noqa: E402

# The bundled SmolLM2-135M: a 4-bit GGUF file of 98.36 MB, loaded as float32 (538 MB).
PARAMETERS = 134_515_008


def _summary(on_disk: int | None, in_memory: int = 4 * PARAMETERS, dtype: str = "float32") -> ModelSummary:
    return ModelSummary("LlamaForCausalLM", "llama", 30, 576, 49152, PARAMETERS, PARAMETERS, in_memory, on_disk,
                        in_memory * 8 / PARAMETERS, dtype)


# -- bits per weight -------------------------------------------------------------------------------------
def test_bits_per_weight_of_a_4_bit_file_say_stored_and_loaded():
    summary = _summary(on_disk=98_360_000)
    assert summary.bits_on_disk == pytest.approx(98_360_000 * 8 / PARAMETERS)  # 5.85, scales included
    text = summary_texts(summary, "bundled")["bits"]
    assert text == "5.85 on disk, 32.00 in memory", text
    assert "as float32" in summary_texts(summary, "bundled")["memory"]  # the number format, said once


def test_bits_per_weight_without_a_file_say_in_memory():
    summary = _summary(on_disk=None, in_memory=2 * PARAMETERS, dtype="bfloat16")
    assert summary.bits_on_disk is None
    assert summary_texts(summary, "hub")["bits"] == "16.00 in memory"


# -- where two answers part ------------------------------------------------------------------------------
@pytest.mark.parametrize(("teacher", "student", "expected"), [
    ([1, 2, 3], [1, 2, 3], "Both models gave exactly the same answer."),
    ([5, 7], [6, 7], "The answers differ from the first token on; 1 token lines up later. Highlighted: "
                     "tokens that differ (a token is a word or a piece of a word)."),
    ([1, 2, 3, 4, 5], [1, 2, 3, 9, 8], "The answers agree on the first 3 tokens, then part; 3 tokens line up in "
                                       "all. Highlighted: tokens that differ (a token is a word or a piece of a "
                                       "word)."),
    ([1, 9], [1, 8], "The answers agree on the first token, then part; 1 token lines up in all. Highlighted: "
                     "tokens that differ (a token is a word or a piece of a word)."),
    ([1, 2], [1, 2, 3, 4], "The student's answer starts with the teacher's whole answer (2 tokens), then goes on "
                           "for 2 more tokens."),
    ([1, 2, 3], [1, 2], "The teacher's answer starts with the student's whole answer (2 tokens), then goes on "
                        "for 1 more token."),
    ([4], [5], "The answers differ from the first token on; no token lines up. Highlighted: tokens that differ "
               "(a token is a word or a piece of a word)."),
])
def test_divergence_sentence_is_plain_english(teacher, student, expected):
    assert divergence_sentence(token_divergence(teacher, student)) == expected


def _answer(tokens: list[str], ids: list[int], special: list[bool]):
    return SimpleNamespace(tokens=tokens, token_ids=ids, special=special, first_token_ms=40.0,
                           decode_tokens_per_s=30.0, text="".join(t for t, s in zip(tokens, special, strict=True)
                                                                   if not s))


def test_playground_shows_no_raw_special_token_and_a_plain_sentence(qtbot, tmp_path):
    playground = Playground()
    qtbot.addWidget(playground)
    run = SimpleNamespace(teacher_source="bundled:smollm2-135m", folder=Path(tmp_path), task="causal-lm")
    playground.set_run(run)
    teacher = _answer([" Paris", ".", "<|im_end|>"], [11, 12, 2], [False, False, True])
    student = _answer([" Lyon", ".", "<|im_end|>"], [13, 12, 2], [False, False, True])
    result = SimpleNamespace(teacher=teacher, student=student, divergence=token_divergence([11, 12, 2], [13, 12, 2]))
    playground._on_answered((playground._key(run), object(), result))
    for side in ("teacher", "student"):
        shown = playground.answers[side].toPlainText()
        assert "im_end" not in shown and "<|" not in shown, shown
    assert "Paris" in playground.answers["teacher"].toPlainText()
    status = playground.status.text()
    assert "2 tokens line up" in status and "part at token" not in status, status


def test_special_tokens_are_marked(tiny_tokenizer):
    ordinary = tiny_tokenizer(" the", add_special_tokens=False)["input_ids"][0]
    ids = [ordinary, tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id]
    assert special_token_mask(tiny_tokenizer, ids) == [False, True, True]


# -- KL's unit in plain words ---------------------------------------------------------------------------------
def test_kl_is_explained_in_plain_words_everywhere_it_is_shown():
    assert "0 means" in KL_EXPLANATION and "nats per token" in KL_EXPLANATION
    report = {"before": {}, "after": {}, "comparison": {"kl_per_token": 0.2}}
    kl_row = next(r for r in compare_rows(report) if r.key == "kl_to_teacher")
    assert KL_EXPLANATION in kl_row.explanation
    assert KL_EXPLANATION in EXPLAIN["KL to the original"]
    assert KL_EXPLANATION in next(r for r in summary_rows(report) if r[0] == "KL to original")[4]
