"""bitsandbytes int8/NF4/FP4, dynamic int8 and GGUF export on the tiny Llama.

Tolerances (random tiny model, logits of magnitude ~0.6):
- bitsandbytes saved folder vs the in-memory model: int8 identical; 4-bit identical when the
  reloaded layers compute the same way, and within 0.02 with bitsandbytes' default CPU
  repacking on reload (it rounds the block scales to bfloat16);
- quantized vs float: int8 0.05, 4-bit 0.3, dynamic int8 0.05 (max abs logit difference);
- GGUF read back through transformers vs the source: F16 0.002, Q8_0 0.03, Q4_0 0.3.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from core.engine.params import config_from_dict
from core.engine.registry import get_technique
from core.errors import RecipeError, StudioError
from core.events import drain
from core.io.saving import save_model

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_bnb = pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed (pip install 'bitsandbytes>=0.48')")
TEXT = "The quick brown fox jumps over the lazy dog. Compression makes models smaller."


def _logits(model, tokenizer):
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _apply(name, model, tokenizer, device="cpu", **params):
    info = get_technique(name)
    windows = torch.randint(0, len(tokenizer), (4, 32), generator=torch.Generator().manual_seed(0))
    ctx = SimpleNamespace(device=device, tokenizer=tokenizer, step_index=0, calibration_windows=lambda: windows)
    return drain(info.handler(model, config_from_dict(info.config_cls, params), ctx))


def _no_cpu_repacking(model):
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


@needs_bnb
@pytest.mark.parametrize("params, tolerance", [
    ({"mode": "int8"}, 0.05),
    ({"mode": "int8", "int8_threshold": 2.0}, 0.05),
    ({"mode": "nf4"}, 0.3),
    ({"mode": "fp4"}, 0.3),
    ({"mode": "nf4", "double_quant": True, "compute_dtype": "bfloat16"}, 0.3),
])
def test_bnb_quantizes_and_reloads_in_plain_transformers(tmp_path, tiny_llama, tiny_tokenizer, params, tolerance):
    from transformers import AutoModelForCausalLM

    from core.models.loading import load_model

    reference = _logits(tiny_llama, tiny_tokenizer)
    reference_params = [p.detach().clone() for p in tiny_llama.parameters()]
    report = _apply("bnb_quantize", tiny_llama, tiny_tokenizer, **params)
    quantized = _logits(tiny_llama, tiny_tokenizer)  # a CPU forward before saving, as the runner does
    assert report.metrics["layers"] == 14
    expected_bits = 8.0 if params["mode"] == "int8" else 4.0
    assert expected_bits < report.metrics["bits_per_weight"] < expected_bits + 1
    assert (quantized - reference).abs().max() < tolerance
    assert (quantized - reference).abs().max() > 0  # it really changed the weights

    folder = save_model(tiny_llama, tiny_tokenizer, tmp_path / "out")
    plain = AutoModelForCausalLM.from_pretrained(folder)
    assert getattr(plain.config, "quantization_config", None) is not None
    if params["mode"] == "int8":
        assert torch.equal(_logits(plain, tiny_tokenizer), quantized)
    else:
        assert (_logits(plain, tiny_tokenizer) - quantized).abs().max() < 0.02
        exact = AutoModelForCausalLM.from_pretrained(folder)
        _no_cpu_repacking(exact)
        assert torch.equal(_logits(exact, tiny_tokenizer), quantized)
    ours = load_model(str(folder)).model
    assert torch.equal(_logits(ours, tiny_tokenizer), quantized)  # our loader keeps the saved layout
    # the layer table of the reloaded model shows the real stored bits (bnb layers are described by
    # bnb_layer_info through model_info, with no per-instance attribute set by the step)
    from core.models.model_info import inspect_model

    for model in (plain, ours):
        rows = {r.name: r for r in inspect_model(model).layers}
        q_proj = rows["model.layers.0.self_attn.q_proj"]
        assert expected_bits < q_proj.bits < expected_bits + 1 and q_proj.params == 64 * 64
        assert inspect_model(model).parameters == sum(p.numel() for p in reference_params)


@needs_bnb
def test_bnb_rejects_meaningless_or_unsupported_settings(tiny_llama, tiny_tokenizer):
    from core.techniques.quantize.bnb import BnbQuantizeConfig, cpu_support_problem

    with pytest.raises(RecipeError, match="choose mode nf4 or fp4"):
        config_from_dict(BnbQuantizeConfig, {"mode": "int8", "double_quant": True})
    with pytest.raises(RecipeError, match="applies to mode int8 only"):
        config_from_dict(BnbQuantizeConfig, {"mode": "nf4", "int8_threshold": 3.0})
    problem = cpu_support_problem("0.43.1", has_cuda=False)
    assert "NVIDIA GPU" in problem and "bitsandbytes>=0.48" in problem and "dynamic_int8" in problem
    assert cpu_support_problem("0.43.1", has_cuda=True) is None
    assert cpu_support_problem("0.50.2", has_cuda=False) is None
    _apply("bnb_quantize", tiny_llama, tiny_tokenizer, mode="int8")
    with pytest.raises(RecipeError, match="plain float model"):
        _apply("bnb_quantize", tiny_llama, tiny_tokenizer, mode="nf4")


def test_dynamic_int8_runs_close_to_float_and_reloads_exactly(tmp_path, tiny_llama, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from core.models.formats import read_manifest
    from core.models.loading import load_model
    from core.models.model_info import inspect_model

    reference = _logits(tiny_llama, tiny_tokenizer)
    params_before = inspect_model(tiny_llama, with_layers=False).parameters
    report = _apply("dynamic_int8", tiny_llama, tiny_tokenizer)
    quantized = _logits(tiny_llama, tiny_tokenizer)
    assert report.metrics["layers"] == 12  # down_proj and lm_head stay float by default
    assert 8 < report.metrics["bits_per_weight"] < 8.6  # int8 codes + a float32 scale per row of 64 weights
    metrics = report.metrics  # the speed-up the step reports is its own two measurements' ratio
    assert metrics["decode_speedup"] == pytest.approx(metrics["decode_tokens_per_s_after"]
                                                      / metrics["decode_tokens_per_s_before"])
    assert 0 < (quantized - reference).abs().max() < 0.05
    summary = inspect_model(tiny_llama, with_layers=True)
    assert summary.parameters == params_before  # int8 layers are still counted, through compression_info
    assert any(8 < row.bits <= 9 for row in summary.layers)  # 8 bits + a scale and zero point per row

    folder = save_model(tiny_llama, tiny_tokenizer, tmp_path / "out")
    assert read_manifest(folder)["format"] == "dynamic_int8"
    assert torch.equal(_logits(load_model(str(folder)).model, tiny_tokenizer), quantized)
    plain = AutoModelForCausalLM.from_pretrained(folder)  # float weights holding the int8 values
    assert (_logits(plain, tiny_tokenizer) - quantized).abs().max() < 0.05


def test_dynamic_int8_is_cpu_only(tiny_llama, tiny_tokenizer):
    with pytest.raises(RecipeError, match="CPU only"):
        _apply("dynamic_int8", tiny_llama, tiny_tokenizer, device="cuda")


@pytest.mark.parametrize("quant, tolerance", [("F16", 0.002), ("Q8_0", 0.03), ("Q4_0", 0.3)])
def test_gguf_export_reads_back_with_gguf_and_transformers(tmp_path, tiny_llama, tiny_tokenizer, quant, tolerance):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.io.gguf_export import export_gguf, read_gguf_summary

    written = export_gguf(tiny_llama, tiny_tokenizer, tmp_path / f"tiny-{quant}.gguf", quant)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny-{quant}.gguf"]  # no partial file left
    summary = read_gguf_summary(written["path"])
    assert summary["architecture"] == "llama" and summary["tokens"] == len(tiny_tokenizer)
    tensors = summary["tensors"]
    assert len(tensors) == written["tensors"] == 2 * 9 + 3
    assert tensors["token_embd.weight"] == {"shape": [len(tiny_tokenizer), 64], "type": quant}
    assert tensors["blk.1.attn_k.weight"] == {"shape": [32, 64], "type": quant}
    assert tensors["blk.0.ffn_down.weight"]["shape"] == [64, 128]
    assert tensors["output_norm.weight"] == {"shape": [64], "type": "F32"}

    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=written["path"])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=written["path"])
    assert tokenizer(TEXT).input_ids == tiny_tokenizer(TEXT).input_ids
    difference = (_logits(model, tiny_tokenizer) - _logits(tiny_llama, tiny_tokenizer)).abs().max()
    assert difference < tolerance


HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (it compiles llama.cpp: "
                                              "pip install llama-cpp-python, a few minutes)")
@pytest.mark.parametrize("quant", ["F16", "Q8_0"])
def test_gguf_export_runs_in_llama_cpp_with_the_same_tokens_and_logits(tmp_path, tiny_llama, tiny_tokenizer, quant):
    """llama.cpp itself loads the file (its pre-tokenizer name included) and scores text like the source model."""
    from llama_cpp import Llama

    from core.io.gguf_export import export_gguf

    written = export_gguf(tiny_llama, tiny_tokenizer, tmp_path / f"tiny-{quant}.gguf", quant)
    llm = Llama(model_path=str(written["path"]), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    ids = tiny_tokenizer(TEXT).input_ids
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=False) == ids
    llm.eval(ids)
    theirs = torch.tensor(llm.scores[: len(ids)]).float()
    ours = _logits(tiny_llama, tiny_tokenizer)[0]
    assert (theirs - ours).abs().max() < (0.01 if quant == "F16" else 0.05)


def test_gguf_export_rejects_what_it_cannot_write(tmp_path, tiny_llama, tiny_bert, tiny_tokenizer):
    from core.io.gguf_export import export_gguf

    with pytest.raises(StudioError, match="choose one of F16, Q8_0, Q4_0"):
        export_gguf(tiny_llama, tiny_tokenizer, tmp_path / "x.gguf", "Q5_K")
    with pytest.raises(StudioError, match="Llama-architecture"):
        export_gguf(tiny_bert, tiny_tokenizer, tmp_path / "x.gguf", "F16")
    with pytest.raises(StudioError, match="must end in .gguf"):
        export_gguf(tiny_llama, tiny_tokenizer, tmp_path / "x.bin", "F16")
    _apply("dynamic_int8", tiny_llama, tiny_tokenizer, measure_speed=False)
    with pytest.raises(StudioError, match="not a float Linear"):
        export_gguf(tiny_llama, tiny_tokenizer, tmp_path / "x.gguf", "F16")
    assert list(tmp_path.iterdir()) == []


def test_dynamic_int8_is_greyed_out_off_the_cpu():
    from core.engine.registry import get_technique

    info = get_technique("dynamic_int8")
    assert info.unavailable_reason(device="cpu") is None
    assert "runs only on the CPU" in info.unavailable_reason(device="cuda:0")
    assert get_technique("rtn_quantize").unavailable_reason(device="cuda:0") is None
