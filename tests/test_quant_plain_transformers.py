"""Our RTN/GPTQ folders (compressed-tensors "pack-quantized") load where people run them.

* Plain transformers (``AutoModelForCausalLM.from_pretrained``, compressed-tensors installed) loads every
  symmetric and asymmetric folder, 4 and 8 bits, groups of 32/64 (SmolLM2-135M's 576 widths, through the runner
  on real weights) and 128 (a tiny Llama 256 wide), and computes our logits; on SmolLM2 it also scores the
  perplexity the run reported.  Asymmetric folders used to fail with a size mismatch on the zero points.
* The folder is what vLLM's compressed-tensors WNA16 scheme selects and reads (its ``from_config`` /
  ``_get_scheme_from_parts`` / ``CompressedTensorsWNA16.create_weights``): quant_method and format
  "pack-quantized", int weights of 4 or 8 bits with the symmetry and group size asked, strategy "group", static,
  no activation quantization, every decoder Linear a target (the ones vLLM fuses — q/k/v, gate/up — in one
  group), the output head ignored; tensors ``weight_packed`` [out, in/pack] int32, ``weight_scale``
  [out, in/group], ``weight_shape`` [2], and for asymmetric ``weight_zero_point`` [out/pack, in/group] int32.
"""

from __future__ import annotations

import json

import pytest
import torch

from core.data.samples import datasets_ready
from core.events import drain
from core.models.loading import load_model
from core.techniques.quantize.packed_linear import PackedLinear
from tests.helpers import run_step

pytest.importorskip("compressed_tensors")

DECODER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")
FUSED = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj"))


def check_vllm_layout(folder, bits: int, group: int, symmetric: bool, layers: int) -> None:
    """Assert the folder is what vLLM's compressed-tensors WNA16 scheme selects and loads."""
    from compressed_tensors.quantization import QuantizationArgs
    from safetensors import safe_open

    quant = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors" and quant["format"] == "pack-quantized"
    assert "lm_head" in quant["ignore"]
    scheme_of = {}
    for name, group_config in quant["config_groups"].items():
        weights = QuantizationArgs.model_validate(group_config["weights"])  # what vLLM parses them with
        assert (weights.type, weights.num_bits, weights.symmetric, weights.strategy, weights.group_size) == \
            ("int", bits, symmetric, "group", group)
        assert not weights.dynamic and weights.actorder is None
        assert group_config.get("input_activations") is None  # weight-only: the WNA16 scheme
        assert group_config.get("format") in (None, "pack-quantized")
        for target in group_config["targets"]:
            scheme_of[target] = name
    names = [f"model.layers.{n}.{layer}" for n in range(layers) for layer in DECODER]
    assert set(scheme_of) == set(names) and not set(scheme_of) & set(quant["ignore"])
    for n in range(layers):
        for fused in FUSED:
            assert len({scheme_of[f"model.layers.{n}.{layer}"] for layer in fused}) == 1
    pack = 32 // bits
    with safe_open(str(folder / "model.safetensors"), "pt") as tensors:
        for name in names:
            out, columns = (int(v) for v in tensors.get_tensor(f"{name}.weight_shape"))
            packed = tensors.get_tensor(f"{name}.weight_packed")
            assert packed.dtype == torch.int32 and tuple(packed.shape) == (out, columns // pack)
            assert tuple(tensors.get_tensor(f"{name}.weight_scale").shape) == (out, columns // group)
            keys = set(tensors.keys())
            if symmetric:
                assert f"{name}.weight_zero_point" not in keys
            else:
                zero = tensors.get_tensor(f"{name}.weight_zero_point")
                assert zero.dtype == torch.int32 and tuple(zero.shape) == (out // pack, columns // group)


def plain_and_ours(folder, monkeypatch):
    """The folder loaded by plain transformers and by our loader (float32, our exact dequantizing path)."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(PackedLinear, "use_cpu_kernel", False)
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ours = load_model(str(folder)).model.float().eval()
    assert isinstance(ours.model.layers[0].mlp.up_proj, PackedLinear)
    return plain, ours


def assert_same_weights(plain, ours) -> None:
    """Every decoder weight plain transformers built (after a forward pass: a symmetric folder stays compressed
    until then) is our dequantized weight, exactly."""
    for name, module in ours.named_modules():
        if isinstance(module, PackedLinear):
            assert torch.equal(plain.get_submodule(name).weight.float(), module.dequantized_weight().float()), name


def assert_same_logits(plain, ours, ids) -> None:
    with torch.no_grad():
        theirs, mine = plain(ids).logits, ours(ids).logits
    assert (theirs - mine).abs().max() <= 1e-4 * mine.abs().max()


# ------------------------------------------------------------------------------ real weights: SmolLM2-135M
L, WINDOWS = 128, 2


@pytest.mark.slow
@pytest.mark.skipif(not datasets_ready(), reason="bundled datasets missing: run `make data`")
# 4-bit both ways on the real model; 8 bits, symmetric and not, on the tiny 256-wide Llama below (seconds there,
# a minute each here)
@pytest.mark.parametrize("bits,group,symmetric", [(4, 32, False), (4, 64, True)])
def test_bundled_rtn_folder_loads_in_plain_transformers_with_our_logits(tmp_path, monkeypatch, bits, group,
                                                                         symmetric):
    from core.data.perplexity_windows import perplexity_windows
    from core.data.texts import load_texts
    from core.engine.recipe import Recipe
    from core.engine.runner import run_recipe
    from core.eval.perplexity import perplexity

    text = tmp_path / "articles.txt"
    text.write_text("\n\n".join(load_texts("bundled:wiki-evaluation")[:2]) + "\n", encoding="utf-8")
    recipe = Recipe.from_dict({
        "name": "rtn", "model": {"source": "bundled:smollm2-135m"},
        "data": {"calibration": "bundled:wiki-calibration", "evaluation": str(text), "sequence_length": L,
                 "calibration_windows": 2},
        "evaluation": {"max_windows": WINDOWS, "kl_to_teacher": False},
        "steps": [{"technique": "rtn_quantize", "params": {"bits": bits, "group_size": group, "symmetric": symmetric,
                                                           "quantize_embedding": False}}]})
    out = tmp_path / "out"
    drain(run_recipe(recipe, out))
    assert json.loads((out / "compression_studio.json").read_text())["plain_transformers"]
    check_vllm_layout(out, bits, group, symmetric, layers=30)
    plain, ours = plain_and_ours(out, monkeypatch)
    tokenizer = load_model(str(out)).tokenizer
    windows = perplexity_windows(load_texts(str(text)), tokenizer, L, WINDOWS)
    assert_same_logits(plain, ours, windows.tokens[:1])
    assert_same_weights(plain, ours)
    # and plain transformers scores what our loader scores on the evaluation windows
    ours_ppl = perplexity(ours, windows).perplexity
    assert perplexity(plain, windows).perplexity == pytest.approx(ours_ppl, rel=1e-6)


# ------------------------------------------------------------------------------ groups of 128: a tiny Llama
@pytest.fixture
def wide_llama_dir(tmp_path, tiny_tokenizer):
    """A 2-layer random Llama 256 wide (groups of 128 divide every width)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    folder = tmp_path / "wide"
    LlamaForCausalLM(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("technique,bits,symmetric", [("rtn_quantize", 4, False), ("rtn_quantize", 8, True),
                                                      ("rtn_quantize", 8, False), ("gptq_quantize", 4, False)])
def test_group_128_folder_loads_in_plain_transformers_with_our_logits(tmp_path, wide_llama_dir, text_file, monkeypatch,
                                                                      technique, bits, symmetric):
    run_step(tmp_path, wide_llama_dir, text_file, technique, {"bits": bits, "group_size": 128, "symmetric": symmetric,
                                                              "quantize_embedding": False})
    out = tmp_path / "out"
    check_vllm_layout(out, bits, 128, symmetric, layers=2)
    plain, ours = plain_and_ours(out, monkeypatch)
    assert_same_logits(plain, ours, torch.randint(0, 300, (2, 16)))
    assert_same_weights(plain, ours)
