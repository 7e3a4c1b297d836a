"""The save dtype: auto keeps the source's, bfloat16 halves the file, packed tensors keep their own."""

import json
import struct

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from core.engine.recipe import Recipe, load_recipe
from core.engine.runner import run_recipe
from core.errors import RecipeError
from core.io.save_dtype import cast_floating_weights, gguf_file_type, resolve_save_dtype
from tests.conftest import SAMPLE_TEXT
from tests.helpers import collect, write_recipe


def _gguf_header(file_type: int | None) -> bytes:
    """A GGUF v3 header: a string, a string array (like the tokenizer's) and then general.file_type."""
    def key(name: str) -> bytes:
        return struct.pack("<Q", len(name)) + name.encode()

    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    kvs = [key("general.architecture") + struct.pack("<I", 8) + string("llama"),
           key("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3) + string("a") + string("bc") + string("d"),
           key("llama.rope.scale") + struct.pack("<If", 6, 1.0)]
    if file_type is not None:
        kvs.append(key("general.file_type") + struct.pack("<II", 4, file_type))
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)


def test_gguf_file_type_read_from_the_header(tmp_path):
    for file_type in (0, 1, 3, 32):
        path = tmp_path / f"m{file_type}.gguf"
        path.write_bytes(_gguf_header(file_type))
        assert gguf_file_type(path) == file_type
    (tmp_path / "none.gguf").write_bytes(_gguf_header(None))
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf at all")
    (tmp_path / "cut.gguf").write_bytes(_gguf_header(3)[:30])
    assert gguf_file_type(tmp_path / "none.gguf") is None
    assert gguf_file_type(tmp_path / "bad.gguf") is None
    assert gguf_file_type(tmp_path / "cut.gguf") is None


def test_resolve_auto_and_explicit(tmp_path, tiny_llama):
    assert resolve_save_dtype("float16", tiny_llama)[0] == torch.float16
    dtype, why = resolve_save_dtype("auto", tiny_llama)
    assert dtype == torch.float32 and "float32" in why
    assert resolve_save_dtype("auto", tiny_llama.to(torch.bfloat16))[0] == torch.bfloat16
    for file_type, expected in ((0, torch.float32), (1, torch.float16), (32, torch.bfloat16), (3, torch.bfloat16)):
        path = tmp_path / f"m{file_type}.gguf"
        path.write_bytes(_gguf_header(file_type))
        dtype, why = resolve_save_dtype("auto", tiny_llama, "gguf", path)
        assert dtype == expected and path.name in why
    assert "Q4_1" in resolve_save_dtype("auto", tiny_llama, "bundled", tmp_path / "m3.gguf")[1]
    folder = tmp_path / "bundled-encoder"  # a bundled safetensors folder (the MiniLM) is no GGUF
    folder.mkdir()
    dtype, why = resolve_save_dtype("auto", tiny_llama.to(torch.float32), "bundled", folder)
    assert dtype == torch.float32 and "GGUF" not in why and "source's weights are float32" in why


def test_recipe_output_dtype_round_trip_and_validation():
    recipe = Recipe.from_dict({"output": {"dtype": "bfloat16"}})
    assert recipe.output.dtype == "bfloat16"
    assert Recipe.from_dict(recipe.to_dict()).output.dtype == "bfloat16"
    assert Recipe.from_dict({}).output.dtype == "auto"  # older recipes without the key
    with pytest.raises(RecipeError, match="output"):
        Recipe.from_dict({"output": {"dtype": "int3"}})


class _Packed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("weight_packed", torch.zeros(4, 2, dtype=torch.int32))
        self.register_buffer("weight_scale", torch.rand(4, 1))
        self.bias = torch.nn.Parameter(torch.rand(4))


def test_cast_keeps_packed_modules_non_persistent_buffers_and_tying():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False), _Packed())
    model[1].weight = model[0].weight  # tied, like a language model's input and output embeddings
    model[1].register_buffer("table", torch.rand(3), persistent=False)
    scale = model[2].weight_scale.clone()
    assert not torch.equal(scale, scale.to(torch.bfloat16).float())
    # Rounding only: still float32, but every value is representable in bfloat16 -- the tied weight once, and
    # the packed layer's scales, which the saved folder's loader builds in bfloat16 (so the run measures what
    # the reloaded result computes)
    assert cast_floating_weights(model, torch.bfloat16, keep_compute_dtype=True) == 2
    weight = model[0].weight
    assert weight.dtype == torch.float32 and torch.equal(weight, weight.to(torch.bfloat16).float())
    rounded = model[2].weight_scale.clone()
    assert rounded.dtype == torch.float32 and torch.equal(rounded, scale.to(torch.bfloat16).float())
    assert cast_floating_weights(model, torch.bfloat16) == 1  # the tied weight once
    assert model[0].weight is model[1].weight and model[0].weight.dtype == torch.bfloat16
    assert model[1].table.dtype == torch.float32
    assert model[2].weight_packed.dtype == torch.int32
    # saving leaves a packed layer's tensors in their own dtype
    assert torch.equal(model[2].weight_scale, rounded) and model[2].bias.dtype == torch.float32



def _run(tmp_path, model_dir, text_file, name, dtype, steps=None):
    extra = {"output": {"dtype": dtype}}
    if steps:
        extra["steps"] = steps
    recipe = load_recipe(write_recipe(tmp_path / f"{name}.yaml", model_dir, text_file, **extra))
    events, report = collect(run_recipe(recipe, tmp_path / name))
    return tmp_path / name, report


def test_bfloat16_save_halves_the_file_and_reloads_close(tmp_path, tiny_llama_dir, text_file, tiny_tokenizer):
    full, full_report = _run(tmp_path, tiny_llama_dir, text_file, "f32", "auto")
    half, half_report = _run(tmp_path, tiny_llama_dir, text_file, "bf16", "bfloat16")
    assert full_report["output"]["dtype"] == "float32" and "auto" in full_report["output"]["why"]
    assert half_report["output"]["dtype"] == "bfloat16"
    ratio = (half / "model.safetensors").stat().st_size / (full / "model.safetensors").stat().st_size
    assert 0.49 < ratio < 0.52
    assert half_report["after"]["bytes_on_disk"] == (half / "model.safetensors").stat().st_size
    assert "bfloat16" in half_report["after"]["on_disk_is"]
    assert json.loads((half / "config.json").read_text())["dtype"] == "bfloat16"

    a = AutoModelForCausalLM.from_pretrained(full).eval()
    b = AutoModelForCausalLM.from_pretrained(half, dtype="auto").eval()
    assert b.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    ids = tiny_tokenizer(SAMPLE_TEXT[:200], return_tensors="pt").input_ids
    with torch.no_grad():
        la, lb = a(ids).logits, b.float()(ids).logits
    assert torch.allclose(la, lb, atol=0.05, rtol=0.05)
    assert (lb.argmax(-1) == la.argmax(-1)).float().mean() > 0.9
    # Pruned zeros stay zeros; the "after" numbers measured the rounded weights that were saved.
    assert (b.model.layers[0].mlp.up_proj.weight == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)


def test_packed_quantized_tensors_keep_their_format(tmp_path, tiny_llama_dir, text_file):
    steps = [{"technique": "rtn_quantize", "params": {"bits": 4, "group_size": 16}}]
    folder, report = _run(tmp_path, tiny_llama_dir, text_file, "rtn", "bfloat16", steps)
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}
    assert dtypes["model.layers.0.mlp.up_proj.weight_packed"] == "I32"
    assert dtypes["model.layers.0.mlp.up_proj.weight_scale"] == "F32"  # scales of packed layers untouched
    assert dtypes["model.embed_tokens.weight_packed"] == "I32"  # the embedding is packed too (8-bit by default)
    assert dtypes["model.embed_tokens.weight_scale"] == "F32"
    assert dtypes["model.norm.weight"] == "BF16"  # ordinary floating-point weights follow the chosen dtype
    from core.models.loading import load_model

    loaded = load_model(str(folder))  # our loader rebuilds the packed layers
    assert report["output"]["dtype"] == "bfloat16"
    assert loaded.model(torch.tensor([[1, 2, 3]])).logits.isfinite().all()


def test_pipeline_form_offers_the_save_dtype_and_the_estimate_follows_it(qtbot):
    from types import SimpleNamespace

    from PySide6.QtWidgets import QComboBox

    from core.engine.recipe import OutputSpec, Step
    from gui.screens.pipeline.data_box import DataBox
    from gui.screens.pipeline.estimate import estimate

    box = DataBox()
    qtbot.addWidget(box)
    box.set_specs(Recipe().data, Recipe().evaluation, OutputSpec("bfloat16"))
    editor = box.output_form.editors["dtype"]
    assert isinstance(editor, QComboBox) and editor.currentData() == "bfloat16" and editor.toolTip()
    editor.setCurrentIndex(editor.findData("float32"))
    assert box.output.dtype == "float32"

    from core.engine.registry import get_technique

    summary = SimpleNamespace(parameters=1_000_000, bytes_in_memory=4_000_000, hidden_size=64, num_layers=2)
    info = get_technique("magnitude_prune")
    sizes = {}
    for dtype in ("float32", "bfloat16", "auto"):
        recipe = Recipe.from_dict({"model": {"source": "some/folder"}, "output": {"dtype": dtype}})
        recipe.steps = [Step(info.name, info.config_cls())]
        sizes[dtype] = estimate(summary, recipe, "cpu", None).output_bytes
    assert sizes["float32"] == 2 * sizes["bfloat16"] == sizes["auto"]
