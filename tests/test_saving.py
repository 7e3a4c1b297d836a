"""Atomic output: complete folder or nothing; the source is never the destination."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.errors import StudioError
from core.io.output_rules import OutputError, check_output_dir
from core.io.saving import atomic_folder, save_model


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


def test_existing_output_needs_overwrite_and_must_be_an_earlier_result(tmp_path, tiny_llama, tiny_tokenizer):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="already exists"):
        save_model(tiny_llama, tiny_tokenizer, out)
    with pytest.raises(OutputError, match="did not write"):  # asked to overwrite, but not our folder
        save_model(tiny_llama, tiny_tokenizer, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    (out / "precious.txt").unlink()
    save_model(tiny_llama, tiny_tokenizer, out, recipe_yaml="name: x\n", report={"before": {}, "after": {}})
    (out / "stale.txt").write_text("from the earlier run")
    save_model(tiny_llama, tiny_tokenizer, out, overwrite=True, recipe_yaml="name: y\n",
               report={"before": {}, "after": {}})
    assert not (out / "stale.txt").exists() and (out / "recipe.yaml").read_text() == "name: y\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_inside_source_is_refused(tmp_path, tiny_llama_dir):
    with pytest.raises(OutputError, match="inside an input"):
        check_output_dir(tiny_llama_dir / "compressed", [tiny_llama_dir])
    with pytest.raises(OutputError, match="is an input"):
        check_output_dir(tiny_llama_dir, [tiny_llama_dir], overwrite=True)


def test_output_parent_must_exist(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        check_output_dir(tmp_path / "a" / "b")


def test_saved_files_all_get_ordinary_permissions(tmp_path, tiny_llama, tiny_tokenizer):
    """safetensors writes through a private temporary file (rw-------); a saved model's files all read alike."""
    import os

    umask = os.umask(0o022)
    try:
        out = save_model(tiny_llama, tiny_tokenizer, tmp_path / "out")
    finally:
        os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_a_failed_swap_puts_the_earlier_result_back(tmp_path, tiny_llama, tiny_tokenizer, monkeypatch):
    """If the new folder cannot be renamed into place, the earlier result is where it was, whole."""
    import os

    from tests.helpers import folder_digest

    out = save_model(tiny_llama, tiny_tokenizer, tmp_path / "out", recipe_yaml="name: x\n",
                     report={"before": {}, "after": {}})
    before = folder_digest(out)
    real_replace = os.replace

    def failing(src, dst):
        if ".partial-" in str(src):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr("core.io.saving.os.replace", failing)
    with pytest.raises(StudioError, match="Input/output error"):
        save_model(tiny_llama, tiny_tokenizer, out, overwrite=True, recipe_yaml="name: y\n",
                   report={"before": {}, "after": {}})
    assert folder_digest(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
