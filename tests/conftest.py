"""Shared fixtures: an isolated app home, a locally trained tokenizer, and tiny random models.

Tiny models keep most tests to milliseconds; tests marked ``slow`` load the real bundled model.
"""

from __future__ import annotations

import os

import pytest
import torch

from core import paths

# The bundled datasets are installed once by `make data`; tests read them from the real folder
# while everything else the app writes goes to a temporary home.
_REAL_DATASETS = str(paths.datasets_dir())

SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog. A language model predicts the next token. "
    "Compression makes models smaller and faster while keeping their quality. "
    "Pruning removes weights, quantization stores them in fewer bits, and distillation teaches "
    "a small student to imitate a large teacher. Every number in a report must be measured. "
) * 4


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    """One cache for the whole session, so the bundled GGUF is converted once per test run."""
    return tmp_path_factory.mktemp("studio-cache")


@pytest.fixture(autouse=True)
def studio_home(tmp_path_factory, monkeypatch, session_cache):
    """Point the app's data folder at a fresh temporary folder for every test."""
    home = tmp_path_factory.mktemp("studio-home")
    monkeypatch.setenv(paths.HOME_ENV, str(home))
    monkeypatch.setenv(paths.DATA_ENV, os.environ.get(paths.DATA_ENV, _REAL_DATASETS))
    monkeypatch.setenv(paths.CACHE_ENV, str(session_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer trained here on a few sentences (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([SAMPLE_TEXT], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<pad>")


@pytest.fixture
def tiny_llama(tiny_tokenizer):
    """A 2-layer random Llama causal LM (hidden 64) matching ``tiny_tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=False,
                         bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
                         pad_token_id=tiny_tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_bert(tiny_tokenizer):
    """A 2-layer random BERT sequence classifier with two labels."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=128,
                        num_labels=2, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1},
                        pad_token_id=tiny_tokenizer.pad_token_id)
    return BertForSequenceClassification(config).eval()


@pytest.fixture
def text_file(tmp_path):
    """A small text file of two documents (the sample text, then the same in capitals) for calibration and
    evaluation in 16-token windows."""
    path = tmp_path / "text.txt"
    path.write_text(SAMPLE_TEXT + "\n\n" + SAMPLE_TEXT.upper(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def held_out_text(tmp_path_factory):
    """A function: ``held_out_text(n)`` is a .txt file of the first ``n`` documents of the bundled held-out
    text (``bundled:wiki-evaluation``), paragraphs apart, written once per ``n`` (what llama.cpp's tools and
    our perplexity both read).  Skips the test when the bundled datasets are missing."""
    from core.data.samples import datasets_ready
    from core.data.texts import load_texts

    if not datasets_ready():
        pytest.skip("bundled datasets missing: run `make data`")
    written = {}

    def text(documents: int):
        if documents not in written:
            path = tmp_path_factory.mktemp("held-out") / "evaluation.txt"
            path.write_text("\n\n".join(load_texts("bundled:wiki-evaluation")[:documents]) + "\n")
            written[documents] = path
        return written[documents]

    return text


@pytest.fixture
def tiny_llama_dir(tmp_path, tiny_llama, tiny_tokenizer):
    """The tiny Llama saved as a plain transformers folder (safetensors + tokenizer)."""
    folder = tmp_path / "tiny-llama"
    tiny_llama.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder
