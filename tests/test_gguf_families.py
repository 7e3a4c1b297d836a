"""GGUF export of the families our own writer does not cover, through llama.cpp's convert_hf_to_gguf.py, run by
llama.cpp itself.

Per family (Qwen3, Mistral, Gemma 3 text, Gemma 2, Phi-3; Llama and Qwen2 are our writer's, tests/test_gguf_*), a
tiny random model with peaked logits (large initial weights, so a misplaced tensor shows) is written through
:func:`core.io.gguf_convert.iter_converted_gguf`, and llama.cpp's perplexity of the file on a text equals the
transformers model's perplexity on the same tokens (llama-tokenize's), chunked as llama-perplexity chunks them.  A
control shows the measure tells models apart: the same model with its two layers swapped is far off.  GPT-2-style
families use SmolLM2's tokenizer (one llama.cpp's converter recognises); SentencePiece families (Gemma 2, Phi-3) a
SentencePiece model trained here.  Then: the CLI's export-gguf of a run's result of a Qwen3 model (the old
"Llama-architecture" refusal is gone), K-quants with our importance matrix, and a failing conversion leaving nothing.
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch

from core.errors import StudioError
from core.io.gguf_convert import converter_script, iter_converted_gguf
from core.io.llama_cpp_tools import find_tool, missing_reason, perplexity
from tests.helpers import collect, run_step

MISSING = (missing_reason("llama-quantize") or missing_reason("llama-perplexity") or missing_reason("llama-tokenize")
           or (None if converter_script() else "llama.cpp's convert_hf_to_gguf.py missing: run `make llama-cpp`"))
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))

L, CHUNKS = 64, 4
TOLERANCE = 1e-3  # relative, perplexity: llama.cpp computes in its own order and partly in 16 bits (seen: < 3e-4)


@pytest.fixture(scope="module")
def text(held_out_text):
    """Three held-out documents: enough for CHUNKS windows of L tokens, and the SentencePiece training text."""
    return held_out_text(3)


@pytest.fixture(scope="module")
def smol_tokenizer():
    """SmolLM2's tokenizer, read from the bundled GGUF (a BPE pre-tokenizer llama.cpp's converter knows)."""
    from transformers import AutoTokenizer

    from core.models.bundled import bundled_model_file

    where = bundled_model_file("smollm2-135m")
    return AutoTokenizer.from_pretrained(str(where.parent), gguf_file=where.name)


class _SentencePieceOnly:
    """A stand-in tokenizer whose files are a SentencePiece ``tokenizer.model`` only (given via ``extras_from``)."""

    def save_pretrained(self, folder):
        return ()


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory, text):
    """A 1,000-piece SentencePiece model trained here on the text (ids: pad 0, eos 1, bos 2, unk 3, as Gemma's;
    <s>, </s>, <unk> and <|endoftext|> by name, as Phi-3's)."""
    import io

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text.read_text().splitlines()), model_writer=model, vocab_size=1000,
        model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3, byte_fallback=True, minloglevel=2,
        user_defined_symbols=["<|endoftext|>"])  # llama.cpp looks Phi-3's up by name
    folder = tmp_path_factory.mktemp("spm")
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    return folder


FAMILIES = {  # model_type -> (extra config, llama.cpp's architecture name, SentencePiece tokenizer)
    "qwen3": ({"head_dim": 16, "tie_word_embeddings": False}, "qwen3", False),
    "mistral": ({"head_dim": 16, "sliding_window": None, "tie_word_embeddings": False}, "llama", False),
    "gemma3_text": ({"head_dim": 16, "sliding_window": 512, "query_pre_attn_scalar": 16,
                     "tie_word_embeddings": True}, "gemma3", False),
    "gemma2": ({"head_dim": 16, "sliding_window": 512, "query_pre_attn_scalar": 16, "tie_word_embeddings": True},
               "gemma2", True),
    "phi3": ({"tie_word_embeddings": False, "pad_token_id": 0}, "phi3", True),
}


def tiny_model(family: str, vocab: int, bos: int, eos: int, seed: int = 0):
    """A 2-layer random model of ``family``; its weights rounded to 16 bits, as the F16 file holds them."""
    from transformers import AutoConfig, AutoModelForCausalLM

    extra = FAMILIES[family][0]
    config = AutoConfig.for_model(family, vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                  bos_token_id=bos, eos_token_id=eos, initializer_range=0.2, **extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    return model


def llama_cpp_tokens(gguf_path, text_path) -> list[int]:
    out = subprocess.run([str(find_tool("llama-tokenize")), "-m", str(gguf_path), "-f", str(text_path), "--ids",
                          "--log-disable"], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def our_perplexity(model, tokens: list[int], bos: int | None) -> float:
    """The model's perplexity as llama-perplexity computes it: chunks of L tokens of the whole text (BOS put first
    in every chunk where the model adds one), the second half of each scored."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for c in range(CHUNKS):
            chunk = torch.tensor(tokens[c * L:(c + 1) * L])
            if bos is not None:
                chunk[0] = bos
            logp = model(chunk[None]).logits[0].double().log_softmax(-1)
            positions = torch.arange(L // 2, L - 1)
            nll -= logp[positions, chunk[positions + 1]].sum().item()
            count += len(positions)
    return math.exp(nll / count)


def _bos_added(gguf_path, tokens):
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).get_field("tokenizer.ggml.bos_token_id")
    bos = int(field.contents()) if field is not None else None
    return bos if bos is not None and tokens[0] == bos else None


@pytest.mark.parametrize("family", list(FAMILIES))
def test_llama_cpp_runs_the_converted_family_with_our_perplexity(family, smol_tokenizer, spm_folder, text, tmp_path):
    from core.io.gguf_export import read_gguf_summary

    _, architecture, sentencepiece = FAMILIES[family]
    if sentencepiece:
        import sentencepiece as spm

        vocab, bos, eos = spm.SentencePieceProcessor(model_file=str(spm_folder / "tokenizer.model")).vocab_size(), 2, 1
        tokenizer, extras = _SentencePieceOnly(), spm_folder
    else:
        vocab, bos, eos = len(smol_tokenizer), smol_tokenizer.bos_token_id, smol_tokenizer.eos_token_id
        tokenizer, extras = smol_tokenizer, None
    model = tiny_model(family, vocab, bos, eos)
    path = tmp_path / f"{family}.gguf"
    _, written = collect(iter_converted_gguf(model, tokenizer, path, "F16", extras_from=extras))
    assert written["path"] == str(path) and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    summary = read_gguf_summary(path)
    assert summary["architecture"] == architecture and summary["tokens"] == vocab

    tokens = llama_cpp_tokens(path, text)
    assert len(tokens) >= CHUNKS * L
    theirs = perplexity(path, text, L, CHUNKS)["perplexity"]
    ours = our_perplexity(model, tokens, _bos_added(path, tokens))
    assert theirs == pytest.approx(ours, rel=TOLERANCE), family
    # control: the measure tells models apart (the same weights with the two layers swapped)
    layers = model.model.layers
    layers[0], layers[1] = layers[1], layers[0]
    for index, layer in enumerate(layers):  # sliding/global attention follows each layer's index
        layer.self_attn.layer_idx = index
    assert abs(our_perplexity(model, tokens, _bos_added(path, tokens)) / theirs - 1) > 5 * TOLERANCE


def test_a_failed_conversion_is_one_line_and_leaves_nothing(tmp_path, text):
    model = tiny_model("phi3", 1000, 1, 2)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StudioError, match=r"convert_hf_to_gguf.py exited with 1: .*tokenizer.model") as error:
        collect(iter_converted_gguf(model, _SentencePieceOnly(), out / "phi3.gguf", "F16"))  # no tokenizer.model
    assert "\n" not in str(error.value)
    assert list(out.iterdir()) == []


@pytest.fixture
def qwen3_result(tmp_path, smol_tokenizer, text):
    """A run's result (50% magnitude pruning) of a tiny Qwen3 model saved as a transformers folder."""
    folder = tmp_path / "qwen3"
    tiny_model("qwen3", len(smol_tokenizer), smol_tokenizer.bos_token_id, smol_tokenizer.eos_token_id
               ).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    run_step(tmp_path, folder, text, "magnitude_prune", {"sparsity": 0.5})
    return tmp_path / "out"


def test_cli_exports_a_qwen3_result_that_llama_cpp_runs_as_ours(qwen3_result, text, tmp_path, capsys):
    from core.cli.commands import main
    from core.io.export import describe_output
    from core.io.gguf_export import read_gguf_summary
    from core.models.loading import load_model

    assert describe_output(qwen3_result).gguf_problem is None
    path = tmp_path / "result.gguf"
    assert main(["export-gguf", str(qwen3_result), "-o", str(path), "--type", "Q8_0"]) == 0
    assert "Wrote" in capsys.readouterr().out
    summary = read_gguf_summary(path)
    assert summary["architecture"] == "qwen3"
    assert summary["tensors"]["blk.0.ffn_up.weight"]["type"] == "Q8_0"
    pruned = load_model(str(qwen3_result)).model.float().eval()
    tokens = llama_cpp_tokens(path, text)
    theirs = perplexity(path, text, L, CHUNKS)["perplexity"]
    ours = our_perplexity(pruned, tokens, _bos_added(path, tokens))
    assert theirs == pytest.approx(ours, rel=0.02)  # 8-bit blocks: close, not equal
    # the file is this app's: a second export may replace it (only with --overwrite)
    assert main(["export-gguf", str(qwen3_result), "-o", str(path), "--type", "F16", "--overwrite"]) == 0
    assert read_gguf_summary(path)["tensors"]["blk.0.ffn_up.weight"]["type"] == "F16"


@pytest.mark.slow
def test_cli_k_quant_with_our_imatrix_from_a_qwen3_result(qwen3_result, tmp_path):
    from core.cli.commands import main
    from core.io.gguf_export import read_gguf_summary

    path, imatrix = tmp_path / "q4km.gguf", tmp_path / "imatrix.gguf"
    assert main(["export-gguf", str(qwen3_result), "-o", str(path), "--type", "Q4_K_M", "--imatrix",
                 "--save-imatrix", str(imatrix), ]) == 0
    types = {t["type"] for name, t in read_gguf_summary(path)["tensors"].items() if name.startswith("blk.")}
    assert types - {"F32"} and not types & {"F16", "BF16"}  # every layer weight quantized (64-wide: fallbacks)
    names = {t.name for t in __import__("gguf").GGUFReader(str(imatrix)).tensors}
    assert "blk.0.ffn_up.weight.in_sum2" in names  # our importance matrix names the converter's tensors
