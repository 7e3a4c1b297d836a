"""Searching the Hugging Face hub for models this app can load (needs the internet).

One call to the hub's model listing, most downloaded first, narrowed to the task the person is
working on (text generation for causal LMs, text classification for classifiers).  Offline, or
without a connection, it raises a ``ModelLoadError`` saying so in plain words; nothing here is
needed to load the bundled model, a folder or a .gguf file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.errors import ModelLoadError, RecipeError

# the app's task -> the hub's pipeline tag
HUB_TASKS = {"causal-lm": "text-generation", "sequence-classification": "text-classification"}
EXPAND = ["downloads", "likes", "pipeline_tag", "library_name", "gated", "safetensors"]


@dataclass(frozen=True)
class HubModel:
    """One search result, with what a person needs to pick a model."""

    id: str
    downloads: int
    likes: int
    task: str
    library: str
    parameters: int | None  # from the repository's safetensors metadata, when the hub has it
    gated: bool

    @property
    def loadable(self) -> bool:
        """Whether the app can download and load it (transformers weights; GGUF-only repositories are not)."""
        return self.library in ("transformers", "")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _model(info) -> HubModel:
    total = getattr(getattr(info, "safetensors", None), "total", None)
    return HubModel(id=info.id, downloads=int(getattr(info, "downloads", 0) or 0), likes=int(getattr(info, "likes", 0) or 0),
                    task=str(getattr(info, "pipeline_tag", "") or ""), library=str(getattr(info, "library_name", "") or ""),
                    parameters=int(total) if total else None, gated=bool(getattr(info, "gated", False)))


def search_hub(query: str, task: str = "causal-lm", limit: int = 30) -> list[HubModel]:
    """Hub models whose id contains ``query``, most downloaded first, for ``task`` (an app task name)."""
    query = query.strip()
    if len(query) < 2:
        raise RecipeError("type at least two letters of a model's name to search the hub, e.g. 'smollm'")
    if _offline():
        raise ModelLoadError("searching the Hugging Face hub needs the internet, and offline mode is on "
                             "(HF_HUB_OFFLINE=1): go online, or open a local folder or .gguf file")
    from huggingface_hub import HfApi

    try:
        found = HfApi().list_models(search=query, pipeline_tag=HUB_TASKS.get(task), sort="downloads", limit=limit,
                                    expand=EXPAND)
        return [_model(info) for info in found]
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"could not search the Hugging Face hub ({first}): check your internet connection, "
                             "or open a local folder or .gguf file instead") from exc
