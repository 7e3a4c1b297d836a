"""Streamed runs (``model.stream: true``, core/engine/streamed.py): the skeleton on meta, one block from the files.

On tiny random Llamas (plumbing, not quality): the streamed Wanda and GPTQ results equal the in-memory
ones on the same windows, streamed perplexity equals in-memory perplexity, the parameters resident at
once do not grow with depth, a failure mid-run leaves nothing, and steps that need the whole model are
refused before any work.
"""

from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest
import torch

from core.data.texts import load_texts, token_windows
from core.engine.calibration import find_blocks
from core.engine.recipe import Recipe, Step, load_recipe
from core.engine.registry import get_technique
from core.engine.runner import run_recipe
from core.engine.streamed_eval import iter_streamed_perplexity
from core.errors import RecipeError
from core.eval.perplexity import perplexity
from core.events import drain
from core.models.loading import load_model
from core.models.streaming import block_stream, open_streamed
from tests.helpers import collect, run_step, write_recipe


def _weights(folder) -> dict[str, torch.Tensor]:
    """Every Linear's weight as the saved model computes with it (packed layers dequantized)."""
    model = load_model(str(folder)).model
    return {name: (module.dequantized_weight() if hasattr(module, "dequantized_weight") else module.weight).detach()
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) or hasattr(module, "dequantized_weight")}


def _llama_dir(tmp_path, tokenizer, layers: int, name: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(layers)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False)
    folder = tmp_path / name
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("technique", "params"), [
    ("wanda_prune", {"sparsity": 0.5}),
    ("gptq_quantize", {"bits": 4, "group_size": 32, "quantize_embedding": False, "act_order": True}),
])
def test_streamed_step_gives_the_in_memory_result(tmp_path, tiny_llama_dir, text_file, technique, params):
    _, in_memory = run_step(tmp_path, tiny_llama_dir, text_file, technique, params, out="memory")
    events, streamed = run_step(tmp_path, tiny_llama_dir, text_file, technique, params, out="streamed",
                                model={"source": str(tiny_llama_dir), "stream": True})
    assert streamed["streamed"] is True
    expected, got = _weights(tmp_path / "memory"), _weights(tmp_path / "streamed")
    assert set(got) == set(expected)
    original = _weights(tiny_llama_dir)
    changed = 0
    for name, weight in expected.items():
        torch.testing.assert_close(got[name], weight, rtol=1e-5, atol=1e-6, msg=name)
        changed += int(not torch.equal(weight, original[name]))
    assert changed > 0  # the step really changed the blocks' Linears (not two untouched copies)
    assert streamed["before"]["perplexity"]["perplexity"] == pytest.approx(
        in_memory["before"]["perplexity"]["perplexity"], rel=1e-5)
    assert streamed["after"]["perplexity"]["perplexity"] == pytest.approx(
        in_memory["after"]["perplexity"]["perplexity"], rel=1e-4)


def test_streamed_perplexity_equals_in_memory_perplexity(tiny_llama_dir, tiny_tokenizer, text_file):
    windows = token_windows(load_texts(str(text_file)), tiny_tokenizer, 16, 6)
    expected = perplexity(load_model(str(tiny_llama_dir)).model, windows)
    model = open_streamed(tiny_llama_dir, lambda m: find_blocks(m)[0])
    got = drain(iter_streamed_perplexity(model, windows))
    assert got.tokens == expected.tokens
    assert got.perplexity == pytest.approx(expected.perplexity, rel=1e-5)
    assert block_stream(model).loads == 2  # each of the 2 blocks read once for all the windows


def _live_cpu_tensor_bytes() -> int:
    """Bytes of every CPU tensor storage Python can still reach (each storage once): what a leak would keep."""
    gc.collect()  # only what is still reachable
    storages = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@pytest.mark.parametrize(("technique", "params"), [
    ("wanda_prune", {"sparsity": 0.5}),
    ("gptq_quantize", {"bits": 4, "group_size": 32, "quantize_embedding": False}),
])
def test_memory_held_at_once_does_not_grow_with_depth(tmp_path, tiny_tokenizer, text_file, monkeypatch,
                                                      technique, params):
    """Counted, not timed: the model's resident parameter bytes (the stream's own count) and every CPU tensor
    still reachable when a block is dropped (a replaced Linear kept alive elsewhere counts too)."""
    import core.models.streaming as streaming

    offload, held = streaming.BlockStream.offload, []

    def counting(self, name, block):
        held.append(_live_cpu_tensor_bytes())
        offload(self, name, block)

    monkeypatch.setattr(streaming.BlockStream, "offload", counting)
    peaks, live, sizes = {}, {}, {}
    for layers in (2, 6):
        folder = _llama_dir(tmp_path, tiny_tokenizer, layers, f"llama-{layers}")
        path = write_recipe(tmp_path / "recipe.yaml", folder, text_file,
                            model={"source": str(folder), "stream": True},
                            evaluation={"kl_to_teacher": False, "perplexity": False},
                            steps=[{"technique": technique, "params": params}])
        held.clear()
        _, report = collect(run_recipe(load_recipe(path), tmp_path / f"out-{layers}"))
        peaks[layers], live[layers] = report["peak_resident_parameter_bytes"], max(held)
    for layers in (2, 6):
        sizes[layers] = sum(p.numel() * 4 for p in load_model(str(tmp_path / f"llama-{layers}")).model.parameters())
    block = (sizes[6] - sizes[2]) // 4  # float32 bytes of one block
    assert peaks[6] == peaks[2]
    assert peaks[6] <= sizes[6] - 4 * block  # never more than the resident layers and one block (+ its copy)
    assert live[6] - live[2] < block / 2  # four more blocks went through, none of them stayed


def test_a_block_is_read_into_memory_of_its_own_not_a_view_of_the_file(tiny_llama_dir):
    """A view of the file's private map, masked in place, would keep its pages as anonymous memory for as long
    as the file is open: one block more for every block (measured: 7 MB per block of the bench's models)."""
    from core.models.memory import tensor_is_file_backed

    model = open_streamed(tiny_llama_dir, lambda m: find_blocks(m)[0])
    stream = block_stream(model)
    name, blocks = find_blocks(model)
    stream.onload(f"{name}.1", blocks[1], "cpu")
    weights = list(blocks[1].parameters())
    assert weights and not any(tensor_is_file_backed(w) for w in weights)
    stream.offload(f"{name}.1", blocks[1])
    assert all(p.device.type == "meta" for p in blocks[1].parameters())


def test_a_failure_mid_run_leaves_no_output(tmp_path, tiny_tokenizer, text_file, monkeypatch):
    import core.techniques.streamed_steps as steps

    folder = _llama_dir(tmp_path, tiny_tokenizer, 3, "llama")
    real, calls = steps.gptq_quantize_weight, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 8:  # in the second block, after the first block's shard was written
            raise RuntimeError("disk pulled out")
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "gptq_quantize_weight", failing)
    path = write_recipe(tmp_path / "recipe.yaml", folder, text_file, model={"source": str(folder), "stream": True},
                        evaluation={"kl_to_teacher": False},
                        steps=[{"technique": "gptq_quantize", "params": {"group_size": 32, "quantize_embedding": False}}])
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RuntimeError, match="disk pulled out"):
        collect(run_recipe(load_recipe(path), tmp_path / "out"))
    assert len(calls) > 8
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no hidden partial folder


def test_steps_that_need_the_whole_model_are_refused_before_any_work(tmp_path, tiny_llama_dir, text_file):
    path = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file,
                        model={"source": str(tiny_llama_dir), "stream": True})  # magnitude pruning
    job = run_recipe(load_recipe(path), tmp_path / "out")
    with pytest.raises(RecipeError, match=r"step 1 \(.*\) needs the whole model at once.*model.stream: false"):
        next(job)
    assert not (tmp_path / "out").exists()


def test_the_estimate_shows_a_streamed_peak_that_does_not_grow_with_depth():
    from tests.test_estimate import _estimate, smollm_like_summary

    def recipe(stream: bool) -> Recipe:
        made = Recipe.from_dict({"model": {"source": "some/folder", "stream": stream}})
        made.steps = [Step("gptq_quantize", get_technique("gptq_quantize").config_cls())]
        return made

    summary = smollm_like_summary()
    deeper = smollm_like_summary()  # 40 blocks instead of 30: 10 more copies of block 0
    block = [row for row in deeper.layers if ".layers.0." in row.name]
    deeper.layers = deeper.layers[:-1] + [SimpleNamespace(**{**vars(row), "name": row.name.replace(
        ".layers.0.", f".layers.{30 + copy}.")}) for copy in range(10) for row in block] + deeper.layers[-1:]
    streamed, whole = _estimate(recipe(True), summary), _estimate(recipe(False), summary)
    assert streamed.peak_bytes < whole.peak_bytes / 2
    assert any(note.startswith("Streamed:") for note in streamed.notes)
    assert _estimate(recipe(True), deeper).peak_bytes == streamed.peak_bytes
    too_big = _estimate(recipe(False), summary, available=whole.peak_bytes // 2)
    assert any("model.stream: true" in note for note in too_big.notes)
    assert _estimate(recipe(True), summary, available=whole.peak_bytes // 2).fits
