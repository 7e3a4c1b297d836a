"""A packed layer on llama.cpp's Q4_0 / Q8_0 blocks is written to GGUF from its own codes and float16 scales.

GPTQ on the q4_0 grid (the registered step, run by the runner on the tiny Llama) searches each block's scale, so
many blocks hold a ``d`` that llama.cpp's plain quantizer would not derive from the values again.  The Export
page's job must write those blocks byte for byte: checked against llama.cpp's block layout (``pack_blocks``,
itself checked against ``gguf.quants``' own bytes) and by dequantizing with the ``gguf`` package.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from core.engine.recipe import Recipe
from core.engine.runner import run_recipe
from core.events import drain
from core.io.gguf_blocks import blocks_fit, pack_blocks
from core.io.gguf_export import LAYER_TENSORS, permute_rotary
from core.techniques.quantize import gptq as gptq_module
from tests.conftest import SAMPLE_TEXT
from tests.helpers import collect


@pytest.mark.parametrize("quant", ["Q4_0", "Q8_0"])
def test_pack_blocks_is_llama_cpps_layout(quant):
    """Codes and scales of llama.cpp's own quantizer (gguf.quants), packed by us, are its bytes exactly."""
    qtype = getattr(gguf.GGMLQuantizationType, quant)
    weight = np.random.default_rng(0).standard_normal((8, 128)).astype(np.float32)
    reference = gguf.quants.quantize(weight, qtype)
    values = gguf.quants.dequantize(reference, qtype)
    d = reference.reshape(8, 4, -1)[..., :2].copy().view(np.float16).astype(np.float32)[..., 0]
    codes = np.rint(values.reshape(8, 4, 32) / np.where(d == 0, 1, d)[..., None]).reshape(8, 128)
    assert blocks_fit(codes, d, quant)
    assert np.array_equal(pack_blocks(codes, d, quant), reference)
    assert not blocks_fit(codes, d * np.float32(1 + 2 ** -14), quant)  # not float16 values: no exact block
    assert not blocks_fit(codes * 20, d, quant) or quant == "Q8_0"  # beyond Q4_0's codes


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text((SAMPLE_TEXT + "\n\n") * 3, encoding="utf-8")
    return path


def test_gptq_q4_0_blocks_are_written_byte_for_byte(monkeypatch, tmp_path, tiny_llama_dir, text):
    """Every GPTQ layer's Q4_0 (and Q8_0) tensor is its codes and searched scales, including blocks whose scale
    llama.cpp's quantizer would re-derive differently from the values."""
    from core.io.export import iter_export_gguf

    packed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    real = gptq_module.replace_module

    def replace(model, name, module):
        packed[name] = (module.codes().numpy().copy(), module.weight_scale.to(torch.float32).numpy().copy())
        return real(model, name, module)

    monkeypatch.setattr(gptq_module, "replace_module", replace)
    recipe = Recipe.from_dict({
        "name": "gptq tiny q4_0", "model": {"source": str(tiny_llama_dir)},
        "data": {"calibration": str(text), "evaluation": str(text), "sequence_length": 16, "calibration_windows": 8},
        "evaluation": {"max_windows": 2, "kl_to_teacher": False},
        "steps": [{"technique": "gptq_quantize",
                   "params": {"bits": 4, "group_size": 32, "symmetric": True, "grid": "q4_0"}}]})
    drain(run_recipe(recipe, tmp_path / "out"))
    assert packed
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_llama_dir)
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    for quant in ("Q4_0", "Q8_0"):  # 4-bit codes fit Q8_0's blocks with the same d
        qtype = getattr(gguf.GGMLQuantizationType, quant)
        collect(iter_export_gguf(tmp_path / "out", tmp_path / f"{quant}.gguf", quant))
        tensors = {t.name: t for t in gguf.GGUFReader(str(tmp_path / f"{quant}.gguf")).tensors}
        moved = 0
        for name, (codes, scales) in packed.items():
            kind = LAYER_TENSORS[".".join(name.split(".")[3:5])]
            if kind in heads:
                codes, scales = permute_rotary(codes, heads[kind]), permute_rotary(scales, heads[kind])
            tensor = tensors[f"blk.{name.split('.')[2]}.{kind}.weight"]
            assert tensor.tensor_type == qtype, name
            raw = np.asarray(tensor.data).reshape(codes.shape[0], -1)
            assert np.array_equal(raw, pack_blocks(codes, scales, quant)), (quant, name)
            values = (codes.reshape(codes.shape[0], -1, 32) * scales[..., None]).reshape(codes.shape).astype(np.float32)
            assert np.array_equal(gguf.quants.dequantize(raw, qtype).reshape(values.shape), values), (quant, name)
            again = gguf.quants.dequantize(gguf.quants.quantize(values, qtype), qtype)
            moved += int(np.sum(np.any((again != values).reshape(values.shape[0], -1, 32), axis=-1)))
        assert moved > 0  # some blocks' scales are not what re-deriving d from the values gives
