"""Loading, inspecting and the plain-words errors for bad model sources."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from core.errors import ModelLoadError
from core.models.loading import load_model, resolve_source
from core.models.model_info import human_bytes, inspect_model


def test_local_folder_loads_with_same_logits(tiny_llama, tiny_llama_dir, tiny_tokenizer):
    loaded = load_model(str(tiny_llama_dir))
    ids = tiny_tokenizer("The quick brown fox", return_tensors="pt").input_ids
    assert loaded.kind == "folder"
    assert torch.equal(loaded.model(ids).logits, tiny_llama(ids).logits)
    assert loaded.source_bytes == (tiny_llama_dir / "model.safetensors").stat().st_size


def test_classifier_folder_loads(tmp_path, tiny_bert, tiny_tokenizer):
    tiny_bert.save_pretrained(tmp_path / "bert")
    tiny_tokenizer.save_pretrained(tmp_path / "bert")
    loaded = load_model(str(tmp_path / "bert"), task="sequence-classification")
    assert type(loaded.model).__name__ == "BertForSequenceClassification"
    assert loaded.model.config.id2label == {0: "rotten", 1: "fresh"}


def test_bin_weights_load_with_weights_only(tmp_path, tiny_llama, tiny_tokenizer):
    folder = tmp_path / "bin-model"
    tiny_llama.save_pretrained(folder, safe_serialization=False) if _supports_bin(tiny_llama) else None
    if not (folder / "pytorch_model.bin").exists():
        folder.mkdir(exist_ok=True)
        tiny_llama.config.save_pretrained(folder)
        torch.save(tiny_llama.state_dict(), folder / "pytorch_model.bin")
    tiny_tokenizer.save_pretrained(folder)
    loaded = load_model(str(folder))
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(loaded.model(ids).logits, tiny_llama(ids).logits)


def _supports_bin(model) -> bool:
    import inspect

    return "safe_serialization" in inspect.signature(model.save_pretrained).parameters


def test_malicious_pickle_is_refused(tmp_path, tiny_llama, tiny_tokenizer):
    """A .bin that would run code when unpickled must not be executed (weights_only=True)."""
    folder = tmp_path / "evil"
    folder.mkdir()
    tiny_llama.config.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"model.embed_tokens.weight": Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError):
        load_model(str(folder))
    assert not marker.exists()


def test_missing_path_is_clear():
    with pytest.raises(ModelLoadError, match="model not found"):
        load_model("/no/such/model/here")


def test_missing_gguf_is_clear(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "missing.gguf"))


def test_folder_without_config_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_folder_without_weights(tmp_path, tiny_llama):
    tiny_llama.config.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(str(tmp_path))


def test_corrupt_safetensors_is_clear(tmp_path, tiny_llama_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="damaged or incomplete"):
        load_model(str(broken))


def test_remote_code_is_not_run_without_permission(tmp_path, tiny_llama_dir):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_llama_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    config["model_type"] = "evil-custom"
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\n")
    with pytest.raises(ModelLoadError, match="trust remote code|own Python code"):
        load_model(str(folder))
    assert not (tmp_path / "ran").exists()


def test_hub_id_offline_and_not_cached_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError, match="not in your Hugging Face cache"):
        load_model("nobody-here/does-not-exist-model")


def test_hub_id_loads_from_users_cache_offline(monkeypatch, tmp_path, tiny_llama, tiny_llama_dir):
    """A model already in the user's hub cache loads with no network at all."""
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--tiny-llama"
    shutil.copytree(tiny_llama_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    loaded = load_model("someone/tiny-llama")
    assert loaded.kind == "hub"
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(loaded.model(ids).logits, tiny_llama(ids).logits)


def test_resolve_source_kinds(tmp_path, tiny_llama_dir):
    assert resolve_source(str(tiny_llama_dir))[0] == "folder"
    assert resolve_source("owner/name")[0] == "hub"
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_source(str(tmp_path / "m.gguf"))[0] == "gguf"


def test_inspect_counts_and_table(tiny_llama):
    nonzero_before = inspect_model(tiny_llama).nonzero_parameters
    with torch.no_grad():
        tiny_llama.model.layers[0].mlp.up_proj.weight[:, :10] = 0
    summary = inspect_model(tiny_llama)
    expected = sum(p.numel() for p in tiny_llama.parameters())
    assert summary.parameters == expected
    assert summary.nonzero_parameters == nonzero_before - 10 * tiny_llama.config.intermediate_size
    assert summary.bytes_in_memory >= expected * 4
    assert summary.bits_per_weight == pytest.approx(32, abs=0.1)
    row = next(r for r in summary.layers if r.name == "model.layers.0.mlp.up_proj")
    assert row.kind == "Linear" and row.shape == [128, 64] and row.dtype == "float32" and row.bits == 32
    assert row.sparsity == pytest.approx(10 / 64)
    assert sum(r.params for r in summary.layers) == summary.parameters


def test_inspect_counts_tied_weights_once(tiny_llama):
    tiny_llama.lm_head.weight = tiny_llama.model.embed_tokens.weight
    summary = inspect_model(tiny_llama)
    assert summary.parameters == sum(p.numel() for p in tiny_llama.parameters())  # parameters() dedups
    assert "lm_head" not in [r.name for r in summary.layers]


def test_human_bytes():
    assert human_bytes(999) == "999 B"
    assert human_bytes(1536) == "1.5 KB"
    assert human_bytes(98_362_432) == "98.4 MB"


@pytest.mark.parametrize("error_name, expected", [
    ("RepositoryNotFoundError", "does not exist on the Hugging Face hub"),
    ("GatedRepoError", "is gated"),
])
def test_hub_errors_are_translated(error_name, expected):
    """What a person sees when online and the id is wrong or gated (the hub cannot be reached here)."""
    import huggingface_hub.errors as hub_errors

    from core.models.hub import _explain

    error_cls = getattr(hub_errors, error_name)
    exc = error_cls.__new__(error_cls)
    Exception.__init__(exc, "404 Client Error")
    assert expected in str(_explain("owner/missing", exc))


def test_hub_unreachable_is_translated():
    from core.models.hub import _explain

    message = str(_explain("owner/name", OSError("[Errno -2] Name or service not known")))
    assert "cannot reach the Hugging Face hub" in message
