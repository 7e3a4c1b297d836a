"""Atomic output: complete folder or nothing; the source is never the destination."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.saving import OutputError, atomic_folder, check_output_dir, remove_stale_partials, save_model


def test_saved_folder_loads_in_plain_transformers(tmp_path, tiny_llama, tiny_tokenizer):
    out = save_model(tiny_llama, tiny_tokenizer, tmp_path / "out", recipe_yaml="name: x\n", report={"a": 1})
    assert {"config.json", "model.safetensors", "recipe.yaml", "report.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()}
    again = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[3, 4, 5]])
    assert torch.equal(again(ids).logits, tiny_llama(ids).logits)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_mid_save_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "out") as folder:
        (folder / "half.bin").write_bytes(b"x" * 100)
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path, tiny_llama, tiny_tokenizer):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="already exists"):
        save_model(tiny_llama, tiny_tokenizer, out)
    assert (out / "precious.txt").read_text() == "keep me"
    save_model(tiny_llama, tiny_tokenizer, out, overwrite=True)
    assert not (out / "precious.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_inside_source_is_refused(tmp_path, tiny_llama_dir):
    with pytest.raises(OutputError, match="inside the source model"):
        check_output_dir(tiny_llama_dir / "compressed", tiny_llama_dir)
    with pytest.raises(OutputError, match="inside the source model"):
        check_output_dir(tiny_llama_dir, tiny_llama_dir, overwrite=True)


def test_output_parent_must_exist(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        check_output_dir(tmp_path / "a" / "b")


def test_remove_stale_partials(tmp_path):
    (tmp_path / ".out.partial-1234abcd").mkdir()
    (tmp_path / "keep").mkdir()
    assert len(remove_stale_partials(tmp_path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]
