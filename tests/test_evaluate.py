"""Measurements: perplexity, KL to a teacher, classification metrics, speed and samples."""

from __future__ import annotations

import copy
import math
import statistics
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from core.errors import DataError, StudioError
from core.eval.metrics import classification_metrics, predict_labels
from core.eval.perplexity import iter_perplexity, kl_to_teacher, perplexity
from core.eval.speed import generate_samples, measure_speed, speed_prompt_ids
from core.events import Progress

# Text the tiny tokenizer was trained on (a part of conftest's SAMPLE_TEXT), repeated.
SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog. A language model predicts the next token. "
    "Compression makes models smaller and faster while keeping their quality. "
) * 4


@pytest.fixture
def windows(tiny_tokenizer):
    ids = tiny_tokenizer(SAMPLE_TEXT, add_special_tokens=False, return_tensors="pt").input_ids[0]
    length, n = 16, 5
    assert ids.numel() >= length * n
    return ids[: length * n].view(n, length).clone()


class UniformLM(torch.nn.Module):
    """Gives every token the same logit, so every next token has probability 1 / vocab."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, **kwargs):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab) * self.anchor)


# ----------------------------------------------------------------------------------- perplexity
def test_perplexity_matches_hand_computation(tiny_llama, windows):
    result = perplexity(tiny_llama, windows, batch_size=2)
    with torch.no_grad():
        logits = tiny_llama(windows).logits
    manual = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    assert result.tokens == windows.shape[0] * (windows.shape[1] - 1)
    assert result.windows == windows.shape[0]
    assert result.nll_per_token == pytest.approx(manual.item(), rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(manual.item()), rel=1e-5)
    assert result.seconds > 0
    assert set(result.to_dict()) == {"perplexity", "nll_per_token", "tokens", "windows", "seconds", "convention",
                                     "method"}
    assert result.convention == "transformers"


def test_perplexity_is_deterministic_and_batch_size_independent(tiny_llama, windows):
    first = perplexity(tiny_llama, windows, batch_size=1)
    assert perplexity(tiny_llama, windows, batch_size=1).perplexity == first.perplexity
    for batch_size in (2, 3, 5, 64):
        assert perplexity(tiny_llama, windows, batch_size=batch_size).perplexity == pytest.approx(
            first.perplexity, rel=1e-6)


def test_uniform_model_has_perplexity_equal_to_vocab_size():
    vocab = 50
    windows = torch.randint(0, vocab, (3, 12), generator=torch.Generator().manual_seed(1))
    result = perplexity(UniformLM(vocab), windows)
    assert result.perplexity == pytest.approx(vocab, rel=1e-6)
    assert result.nll_per_token == pytest.approx(math.log(vocab), rel=1e-6)


def test_perplexity_yields_progress_restores_mode_and_leaks_no_inference_mode(tiny_llama, windows):
    tiny_llama.train()
    job = iter_perplexity(tiny_llama, windows, batch_size=1)
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            result = stop.value
            break
        assert not torch.is_inference_mode_enabled()
    assert all(isinstance(e, Progress) and e.stage == "perplexity" for e in events)
    assert events[-1].done == events[-1].total == windows.shape[0]
    assert result.perplexity > 1
    assert tiny_llama.training


def test_perplexity_of_a_half_model_is_close(tiny_llama, windows):
    full = perplexity(tiny_llama, windows).perplexity
    half = perplexity(copy.deepcopy(tiny_llama).to(torch.bfloat16), windows).perplexity
    assert math.isfinite(half) and half == pytest.approx(full, rel=0.05)


def test_perplexity_rejects_bad_windows(tiny_llama, windows):
    with pytest.raises(DataError):
        perplexity(tiny_llama, windows[0])
    with pytest.raises(DataError):
        perplexity(tiny_llama, windows[:, :1])
    with pytest.raises(DataError):
        perplexity(tiny_llama, windows + 10_000)


# ----------------------------------------------------------------------------------- KL
def test_kl_of_a_model_to_itself_is_zero(tiny_llama, windows):
    result = kl_to_teacher(tiny_llama, tiny_llama, windows, batch_size=2)
    assert result.kl_per_token == pytest.approx(0.0, abs=1e-7)
    assert result.top1_agreement == 1.0
    assert result.tokens == windows.numel()


def test_kl_to_a_perturbed_copy_is_positive_and_matches_hand_computation(tiny_llama, windows):
    student = copy.deepcopy(tiny_llama)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    result = kl_to_teacher(student, tiny_llama, windows, batch_size=3)
    with torch.no_grad():
        log_t = F.log_softmax(tiny_llama(windows).logits, -1)
        log_s = F.log_softmax(student(windows).logits, -1)
    manual = (log_t.exp() * (log_t - log_s)).sum(-1).mean().item()
    agreement = (log_t.argmax(-1) == log_s.argmax(-1)).float().mean().item()
    assert result.kl_per_token > 0
    assert result.kl_per_token == pytest.approx(manual, rel=1e-4)
    assert result.top1_agreement == pytest.approx(agreement)
    assert 0 <= result.top1_agreement <= 1
    assert set(result.to_dict()) == {"kl_per_token", "top1_agreement", "tokens"}


# ----------------------------------------------------------------------------------- classification
def test_classification_metrics_on_a_hand_worked_confusion_matrix():
    # true a a a b b c c c c ; predicted a a b b a a a b b  ("c" is never predicted)
    # confusion (rows true, columns predicted): a [2 1 0], b [1 1 0], c [2 2 0]
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 0, 0, 0, 1, 1]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [2, 2, 0]]
    assert m["accuracy"] == pytest.approx(3 / 9)
    a, b, c = m["per_class"]["a"], m["per_class"]["b"], m["per_class"]["c"]
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == pytest.approx((2 / 5, 2 / 3, 0.5, 3))
    assert (b["precision"], b["recall"], b["f1"], b["support"]) == pytest.approx((1 / 4, 1 / 2, 1 / 3, 2))
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 4)  # 0/0 -> 0
    assert m["macro_precision"] == pytest.approx((0.4 + 0.25 + 0) / 3)
    assert m["macro_recall"] == pytest.approx(7 / 18)
    assert m["macro_f1"] == pytest.approx(5 / 18)
    assert m["examples"] == 9


def test_classification_metrics_perfect_and_invalid():
    m = classification_metrics([0, 1, 1], [0, 1, 1], ["no", "yes"])
    assert m["accuracy"] == m["macro_precision"] == m["macro_recall"] == m["macro_f1"] == 1.0
    with pytest.raises(DataError):
        classification_metrics([0, 1], [0], ["no", "yes"])
    with pytest.raises(DataError):
        classification_metrics([0, 2], [0, 1], ["no", "yes"])
    with pytest.raises(DataError):
        classification_metrics([], [], ["no", "yes"])


def test_predict_labels_on_tiny_bert(tiny_bert, tiny_tokenizer):
    texts = ["The quick brown fox.", "Pruning removes weights", "a", SAMPLE_TEXT, "Every number is measured."]
    labels = predict_labels(tiny_bert, tiny_tokenizer, texts, batch_size=2, max_length=32)
    assert len(labels) == len(texts)
    assert all(isinstance(x, int) and x in (0, 1) for x in labels)
    assert predict_labels(tiny_bert, tiny_tokenizer, texts, batch_size=16, max_length=32) == labels


# ----------------------------------------------------------------------------------- speed
def test_measure_speed_reports_medians_of_positive_runs(tiny_llama, tiny_tokenizer):
    result = measure_speed(tiny_llama, tiny_tokenizer, prompt_tokens=32, new_tokens=8, repeats=3, warmup=1)
    assert len(result.runs) == result.repeats == 3
    assert (result.prompt_tokens, result.new_tokens) == (32, 8)
    for run in result.runs:
        assert run["prefill_ms"] > 0 and math.isfinite(run["prefill_ms"])
        assert run["decode_tokens_per_s"] > 0 and math.isfinite(run["decode_tokens_per_s"])
    assert result.prefill_ms == statistics.median(r["prefill_ms"] for r in result.runs)
    assert result.decode_tokens_per_s == statistics.median(r["decode_tokens_per_s"] for r in result.runs)
    assert result.to_dict()["runs"] == result.runs


def test_speed_prompt_is_deterministic_and_fits_the_context(tiny_llama, tiny_tokenizer):
    ids = speed_prompt_ids(tiny_tokenizer, 300)
    assert ids.shape == (1, 300)
    assert torch.equal(ids, speed_prompt_ids(tiny_tokenizer, 300))
    with pytest.raises(StudioError):
        measure_speed(tiny_llama, tiny_tokenizer, prompt_tokens=250, new_tokens=10)


# ----------------------------------------------------------------------------------- samples
def test_generate_samples_is_deterministic_and_exact_without_eos(tiny_llama, tiny_tokenizer):
    prompts = ["The quick brown fox", "Compression makes models"]
    first = generate_samples(tiny_llama, tiny_tokenizer, prompts, max_new_tokens=10, stop_at_eos=False)
    second = generate_samples(tiny_llama, tiny_tokenizer, prompts, max_new_tokens=10, stop_at_eos=False)
    assert [s.completion for s in first] == [s.completion for s in second]
    assert [s.prompt for s in first] == prompts
    for sample in first:
        assert sample.new_tokens == 10
        assert sample.seconds > 0 and sample.tokens_per_s == pytest.approx(10 / sample.seconds)
    assert set(first[0].to_dict()) == {"prompt", "completion", "new_tokens", "seconds", "tokens_per_s"}


def test_generate_samples_reports_an_early_eos_honestly(tiny_llama, tiny_tokenizer):
    # All-zero logits: greedy picks the first id on ties, which is the EOS token here.
    assert tiny_tokenizer.eos_token_id == 0
    with torch.no_grad():
        tiny_llama.lm_head.weight.zero_()
    stopped = generate_samples(tiny_llama, tiny_tokenizer, ["The quick brown fox"], max_new_tokens=8)
    assert stopped[0].new_tokens == 1 and stopped[0].completion == ""
    forced = generate_samples(tiny_llama, tiny_tokenizer, ["The quick brown fox"], max_new_tokens=8,
                              stop_at_eos=False)
    assert forced[0].new_tokens == 8


def test_generate_samples_with_a_chat_template(tiny_llama, tiny_tokenizer):
    with pytest.raises(StudioError):
        generate_samples(tiny_llama, tiny_tokenizer, ["Hi"], use_chat_template=True)
    chat_tokenizer = copy.deepcopy(tiny_tokenizer)
    chat_tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                                    "{% if add_generation_prompt %}assistant:{% endif %}")
    samples = generate_samples(tiny_llama, chat_tokenizer, ["The fox"], max_new_tokens=6, use_chat_template=True,
                               stop_at_eos=False)
    assert samples[0].prompt == "The fox" and samples[0].new_tokens == 6


def test_predictions_are_aligned_by_label_name():
    from core.eval.metrics import align_predictions

    # model: 0 = rotten, 1 = fresh; dataset (sorted): 0 = fresh, 1 = rotten
    assert align_predictions([0, 1, 1], {0: "rotten", 1: "fresh"}, ["fresh", "rotten"]) == [1, 0, 0]
    assert align_predictions([0, 1], {0: "LABEL_0", 1: "LABEL_1"}, ["fresh", "rotten"]) == [0, 1]
    assert align_predictions([0, 1], None, ["fresh", "rotten"]) == [0, 1]
