"""Perplexity as the field computes it: each convention against an independent computation, on real weights.

The references below are written from each tool's published method, not from our code:

* transformers' perplexity guide: ``tokenizer(text)`` (its own special tokens), non-overlapping windows,
  ``model(window, labels=window).loss``;
* lm-evaluation-harness's ``loglikelihood_rolling``: ``get_rolling_token_windows(tokens, prefix_token,
  max_seq_len=L, context_len=1)`` per document, each window made disjoint and scored as (context,
  continuation);
* llama.cpp's ``llama-perplexity``: the whole text tokenized with BOS when the model adds one, chunks of
  L tokens with BOS put in each chunk's first place, the logits from L/2 on scored.

A plain-text file is one document: paragraph breaks are text, not end-of-text tokens (which once
put our number 22% above everyone else's on a novel).
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from core.cli.commands import main
from core.data.perplexity_windows import perplexity_windows
from core.data.samples import datasets_ready
from core.data.texts import load_texts
from core.eval.perplexity import perplexity
from core.models.loading import load_model

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not datasets_ready(), reason="bundled datasets missing: run `make data`")]

L = 256


@pytest.fixture(scope="module")
def smollm(session_cache):
    import os

    from core import paths

    os.environ[paths.CACHE_ENV] = str(session_cache)
    return load_model("bundled:smollm2-135m")


@pytest.fixture(scope="module")
def articles() -> list[str]:
    return load_texts("bundled:wiki-evaluation")


@pytest.fixture
def novel(tmp_path, articles):
    """A plain-text file of several articles: many paragraphs, separated by blank lines."""
    path = tmp_path / "novel.txt"
    path.write_text("\n\n".join(articles[:4]) + "\n")
    return path


def _bos_tokenizer(tokenizer):
    """The model's tokenizer configured to add its beginning-of-text token, as Llama's and Gemma's do."""
    adding = copy.deepcopy(tokenizer)
    adding.add_bos_token = True
    assert adding("Hello")["input_ids"][0] == adding.bos_token_id  # the set-up itself works
    return adding


def _logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return F.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)


def _transformers_reference(model, tokenizer, text: str, windows: int) -> float:
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    total = 0.0
    with torch.inference_mode():
        for i in range(windows):
            window = ids[i * L:(i + 1) * L][None]
            total += float(model(window, labels=window).loss) * (L - 1)  # the mean over L - 1 predictions
    return math.exp(total / (windows * (L - 1)))


def _lm_eval_reference(model, tokenizer, documents: list[str]) -> tuple[float, int]:
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    total, count = 0.0, 0
    for document in documents:
        tokens = tokenizer(document, add_special_tokens=False)["input_ids"]
        pairs = [([prefix] + tokens[:min(L, len(tokens)) - 1], tokens[:min(L, len(tokens))])]
        done = len(pairs[0][1])
        while done < len(tokens):
            size = min(len(tokens) - done, L)
            end = done + size
            pairs.append((tokens[end - L - 1:end - 1], tokens[end - size:end]))
            done += size
        for inputs, predicted in pairs:
            context = inputs[:len(inputs) - (len(predicted) - 1)]  # make_disjoint_window
            logprobs = _logprobs(model, (context + predicted)[:-1])
            rows = logprobs[-len(predicted):]
            total -= float(rows[torch.arange(len(predicted)), torch.tensor(predicted)].double().sum())
            count += len(predicted)
    return math.exp(total / count), count


def _llama_cpp_reference(model, tokenizer, text: str, chunks: int, add_bos: bool) -> float:
    tokens = tokenizer(text)["input_ids"]
    first = L // 2
    total, count = 0.0, 0
    for i in range(chunks):
        batch = list(tokens[i * L:(i + 1) * L])
        if add_bos:
            batch[0] = tokenizer.bos_token_id
        logprobs = _logprobs(model, batch)
        for position in range(first, L - 1):
            total -= float(logprobs[position, batch[position + 1]])
            count += 1
    return math.exp(total / count)


def test_a_plain_text_file_is_one_document_and_eval_matches_transformers(smollm, novel, capsys):
    text = novel.read_text()
    windows = perplexity_windows(load_texts(str(novel)), smollm.tokenizer, L, 6)
    expected_ids = smollm.tokenizer(text)["input_ids"][:6 * L]
    assert windows.tokens.flatten().tolist() == expected_ids  # paragraph breaks stay text: no end-of-text inside
    assert main(["-q", "eval", "bundled:smollm2-135m", "--data", str(novel), "--sequence-length", str(L),
                 "--max-windows", "6", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)["perplexity"]
    reference = _transformers_reference(smollm.model, smollm.tokenizer, text, 6)
    assert ours["perplexity"] == pytest.approx(reference, rel=1e-4)
    assert ours["convention"] == "transformers" and "one document" in ours["method"]
    assert ours["tokens"] == 6 * (L - 1)


def test_the_beginning_of_text_token_is_added_where_the_tokenizer_adds_it(smollm, novel, articles, tmp_path):
    tokenizer = _bos_tokenizer(smollm.tokenizer)
    text = novel.read_text()
    windows = perplexity_windows(load_texts(str(novel)), tokenizer, L, 4)
    assert windows.tokens.flatten().tolist() == tokenizer(text)["input_ids"][:4 * L]
    ours = perplexity(smollm.model, windows).perplexity
    assert ours == pytest.approx(_transformers_reference(smollm.model, tokenizer, text, 4), rel=1e-4)
    # documents of a table each begin with it, after the end-of-text token that closes the one before
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": a[:400]}) + "\n" for a in articles[:6]))
    joined = perplexity_windows(load_texts(str(rows)), tokenizer, 64, None).tokens.flatten().tolist()
    expected: list[int] = []
    for article in articles[:6]:
        expected += ([tokenizer.eos_token_id] if expected else []) + tokenizer(article[:400].strip())["input_ids"]
    assert joined == expected[:len(joined)]
    # and without it configured, none is added
    plain = perplexity_windows(load_texts(str(novel)), smollm.tokenizer, L, 1).tokens[0].tolist()
    assert tokenizer.bos_token_id not in plain[:1]


@pytest.mark.parametrize("add_bos", [False, True])
def test_lm_eval_convention_equals_the_rolling_loglikelihood(smollm, articles, tmp_path, add_bos):
    """Documents of several lengths: shorter than a window, a little longer (a tail scored with a full
    window of context), and several windows long."""
    tokenizer = _bos_tokenizer(smollm.tokenizer) if add_bos else smollm.tokenizer
    documents = [articles[0][:300], articles[1][:1500], articles[2][:5000]]
    rows = tmp_path / "docs.jsonl"
    rows.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    windows = perplexity_windows(load_texts(str(rows)), tokenizer, L, None, "lm-eval")
    ours = perplexity(smollm.model, windows, batch_size=3)
    reference, count = _lm_eval_reference(smollm.model, tokenizer, [d.strip() for d in documents])
    assert ours.tokens == count  # every token of every document is predicted, once
    assert ours.perplexity == pytest.approx(reference, rel=1e-4)
    assert ours.convention == "lm-eval"


@pytest.mark.parametrize("add_bos", [False, True])
def test_llama_cpp_convention_scores_the_second_half_of_each_chunk(smollm, novel, add_bos):
    tokenizer = _bos_tokenizer(smollm.tokenizer) if add_bos else smollm.tokenizer
    windows = perplexity_windows(load_texts(str(novel)), tokenizer, L, 4, "llama.cpp")
    ours = perplexity(smollm.model, windows)
    reference = _llama_cpp_reference(smollm.model, tokenizer, novel.read_text(), 4, add_bos)
    assert ours.perplexity == pytest.approx(reference, rel=1e-4)
    assert ours.tokens == 4 * (L - 1 - L // 2)


def test_the_conventions_agree_where_they_should(smollm, novel):
    """lm-eval's convention predicts one more token per window than transformers' (from one token of
    context), so it is within a fraction of a percent on long text; llama.cpp's scores only tokens with
    at least L/2 of context, so it is lower."""
    texts = load_texts(str(novel))
    found = {name: perplexity(smollm.model, perplexity_windows(texts, smollm.tokenizer, L, 8, name)).perplexity
             for name in ("transformers", "lm-eval", "llama.cpp")}
    assert found["lm-eval"] == pytest.approx(found["transformers"], rel=0.02), found
    assert found["llama.cpp"] < 0.97 * found["transformers"], found


def test_engine_windows_start_as_the_model_expects(smollm, novel, articles, tmp_path):
    """Calibration, distillation and KL windows: with a tokenizer that adds BOS every window begins with it and
    the text continues where the window before stopped; without, they are the plain stream."""
    from core.data.texts import token_windows

    tokenizer = _bos_tokenizer(smollm.tokenizer)
    bos = tokenizer.bos_token_id
    text_ids = tokenizer(novel.read_text(), add_special_tokens=False)["input_ids"]
    windows = token_windows(load_texts(str(novel)), tokenizer, 64, 5)
    assert windows[:, 0].tolist() == [bos] * 5
    assert windows[:, 1:].flatten().tolist() == text_ids[:5 * 63]  # nothing skipped, nothing repeated
    plain = token_windows(load_texts(str(novel)), smollm.tokenizer, 64, 5)
    assert plain.flatten().tolist() == text_ids[:5 * 64]
