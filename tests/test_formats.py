"""The saved-format extension point: a marked model saves with its format and our loader reads it back."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.errors import ModelLoadError
from core.io.saving import save_model
from core.models import formats
from core.models.loading import load_model


@pytest.fixture
def halved_format(monkeypatch):
    """A toy format that stores weights halved and doubles them on load (so a plain load would differ)."""

    def save(model, folder):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.5)
        model.save_pretrained(folder)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(2.0)

    def load(folder, task):
        model = AutoModelForCausalLM.from_pretrained(folder)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(2.0)
        formats.mark_format(model, "test-halved")
        return model

    saved_format = formats.SavedFormat("test-halved", "weights stored halved (test only)", save, load)
    monkeypatch.setitem(formats._FORMATS, "test-halved", saved_format)
    return saved_format


def test_marked_model_round_trips_through_its_format(tmp_path, tiny_llama, tiny_tokenizer, halved_format):
    formats.mark_format(tiny_llama, "test-halved", note="kept in the manifest")
    out = save_model(tiny_llama, tiny_tokenizer, tmp_path / "out")
    manifest = json.loads((out / formats.MANIFEST).read_text())
    assert manifest["format"] == "test-halved" and manifest["note"] == "kept in the manifest"
    assert manifest["plain_transformers"] is False
    loaded = load_model(str(out))
    ids = torch.tensor([[1, 2, 3]])
    assert torch.allclose(loaded.model(ids).logits, tiny_llama(ids).logits, atol=1e-6)
    assert formats.model_format(loaded.model)["format"] == "test-halved"


def test_unknown_format_is_a_clear_error(tmp_path, tiny_llama_dir):
    (tiny_llama_dir / formats.MANIFEST).write_text(json.dumps({"format": "from-the-future"}))
    with pytest.raises(ModelLoadError, match="does not know"):
        load_model(str(tiny_llama_dir))


def test_damaged_manifest_is_a_clear_error(tiny_llama_dir):
    (tiny_llama_dir / formats.MANIFEST).write_text("{not json")
    with pytest.raises(ModelLoadError, match="damaged"):
        load_model(str(tiny_llama_dir))


def test_two_module_replacing_formats_are_refused(tiny_llama, halved_format, monkeypatch):
    from core.errors import StudioError

    other = formats.SavedFormat("test-other", "another", halved_format.save, halved_format.load)
    monkeypatch.setitem(formats._FORMATS, "test-other", other)
    formats.mark_format(tiny_llama, "test-halved")
    with pytest.raises(StudioError, match="two steps that each need their own saved format"):
        formats.mark_format(tiny_llama, "test-other")


def test_a_storage_only_format_can_be_taken_over(tiny_llama, halved_format):
    formats.mark_format(tiny_llama, "sparse-bitmask")
    formats.mark_format(tiny_llama, "test-halved")
    assert formats.model_format(tiny_llama)["format"] == "test-halved"


def test_self_describing_modules_are_counted_once(tiny_llama):
    """A module that reports compression_info() stands for its children in the layer table."""
    from torch import nn

    from core.models.model_info import inspect_model

    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def compression_info(self):
            return {"params": self.inner.weight.numel(), "bits": 4.0, "shape": list(self.inner.weight.shape)}

        def forward(self, x):
            return self.inner(x)

    before = inspect_model(tiny_llama).parameters
    tiny_llama.model.layers[0].mlp.up_proj = Wrapped(tiny_llama.model.layers[0].mlp.up_proj)
    summary = inspect_model(tiny_llama)
    names = [r.name for r in summary.layers]
    assert "model.layers.0.mlp.up_proj" in names and "model.layers.0.mlp.up_proj.inner" not in names
    assert summary.parameters == before
