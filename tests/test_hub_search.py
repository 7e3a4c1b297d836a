"""Searching the hub: the core call (with the hub's listing replaced, no network here) and the dialog."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from core.errors import ModelLoadError, RecipeError
from core.models.hub_search import HubModel, search_hub

LISTING = [
    SimpleNamespace(id="HuggingFaceTB/SmolLM2-135M", downloads=900, likes=40, pipeline_tag="text-generation",
                    library_name="transformers", gated=False, safetensors=SimpleNamespace(total=134_515_008)),
    SimpleNamespace(id="someone/SmolLM2-135M-GGUF", downloads=500, likes=3, pipeline_tag="text-generation",
                    library_name="gguf", gated=False, safetensors=None),
    SimpleNamespace(id="org/gated-smol", downloads=10, likes=1, pipeline_tag=None, library_name="transformers",
                    gated="manual", safetensors=None),
]


@pytest.fixture
def hub(monkeypatch):
    """Replace HfApi.list_models; record what it was asked."""
    from huggingface_hub import HfApi

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    asked = {}

    def list_models(self, **kwargs):
        asked.update(kwargs)
        if kwargs["search"] == "boom":
            raise ConnectionError("Failed to resolve 'huggingface.co'")
        return iter(LISTING)

    monkeypatch.setattr(HfApi, "list_models", list_models)
    return asked


def test_search_lists_models_for_the_task_most_downloaded_first(hub):
    found = search_hub("  smollm2 ", task="causal-lm")
    assert hub["search"] == "smollm2" and hub["pipeline_tag"] == "text-generation" and hub["sort"] == "downloads"
    assert [m.id for m in found] == [m.id for m in LISTING]
    assert found[0].parameters == 134_515_008 and found[0].loadable
    assert not found[1].loadable  # a GGUF-only repository cannot be loaded by id
    assert found[2].gated and found[2].parameters is None and found[2].task == ""
    search_hub("minilm", task="sequence-classification")
    assert hub["pipeline_tag"] == "text-classification"


def test_search_failures_say_what_to_do(hub, monkeypatch):
    with pytest.raises(RecipeError, match="at least two letters"):
        search_hub(" a ")
    with pytest.raises(ModelLoadError, match="check your internet connection, or open a local folder"):
        search_hub("boom")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="offline mode is on"):
        search_hub("smollm2")


def test_search_dialog_shows_results_and_picks_only_loadable_models(qtbot, monkeypatch):
    from PySide6.QtWidgets import QDialogButtonBox

    import gui.screens.model.hub_search as dialog_module
    from gui.screens.model.source_picker import SourcePicker

    results = [HubModel("a/ok", 900, 4, "text-generation", "transformers", 134_515_008, False),
               HubModel("b/gguf-only", 5, 0, "text-generation", "gguf", None, False)]
    calls = []

    def fake_search(query, task):
        calls.append((query, task))
        if query == "offline":
            raise ModelLoadError("searching the Hugging Face hub needs the internet")
        return results

    monkeypatch.setattr(dialog_module, "search_hub", fake_search)
    picker = SourcePicker(task=lambda: "causal-lm")
    qtbot.addWidget(picker)
    assert picker.hub_button.isEnabled()
    dialog = dialog_module.HubSearchDialog(picker.task, picker)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    dialog.query.setText("smol")
    dialog.search_button.click()
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 2, timeout=10_000)
    assert calls == [("smol", "causal-lm")]
    assert dialog.table.item(0, 1).text() == "134.5 M" and "2 models found" in dialog.status.text()
    assert not ok.isEnabled()
    dialog.table.selectRow(1)  # greyed: cannot be chosen
    assert dialog.chosen_id() is None and not ok.isEnabled()
    dialog.table.selectRow(0)
    assert dialog.chosen_id() == "a/ok" and ok.isEnabled()

    dialog.query.setText("offline")
    dialog.search()
    qtbot.waitUntil(lambda: "needs the internet" in dialog.status.text(), timeout=10_000)
    assert dialog.search_button.isEnabled()  # a failed search can be tried again


def test_the_model_chosen_in_the_search_becomes_the_source(qtbot, monkeypatch):
    import gui.screens.model.hub_search as dialog_module
    from gui.screens.model.source_picker import SourcePicker

    monkeypatch.setattr(dialog_module.HubSearchDialog, "exec", lambda self: 1)
    monkeypatch.setattr(dialog_module.HubSearchDialog, "chosen_id", lambda self: "HuggingFaceTB/SmolLM2-360M")
    picker = SourcePicker()
    qtbot.addWidget(picker)
    picker.hub_button.click()
    assert picker.source() == "HuggingFaceTB/SmolLM2-360M"
    monkeypatch.setattr(dialog_module.HubSearchDialog, "exec", lambda self: 0)  # cancelled: nothing changes
    picker.set_source("bundled:smollm2-135m")
    picker.hub_button.click()
    assert picker.source() == "bundled:smollm2-135m"
