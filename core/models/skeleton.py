"""A model's layers without its weights: built from the config alone, on PyTorch's "meta" device.

A meta tensor has a shape and a dtype but no storage, so the skeleton of a 70-billion-parameter model
costs a few megabytes and well under a second.  Every check that depends only on layer shapes (does
this group size divide each targeted layer's width, are there enough layers to drop, …) runs on it
before any weights load, so a setting that cannot work is refused at once instead of minutes into a run.

The config comes from where the weights will: a model folder's ``config.json``, a GGUF file's metadata
(read by transformers without its tensors) or the converted copy in the cache, or a hub model already in
the local hub cache.  A model that needs its own code (``trust_remote_code``) is only built when the
person opted in; a hub model not downloaded yet has no skeleton (its checks run after the download).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.models.loading import _auto_class, gguf_cache_folder, resolve_source


def _config_from_gguf(gguf_file: Path) -> Any:
    from transformers import AutoConfig

    cached = gguf_cache_folder(gguf_file)
    if (cached / "config.json").is_file():  # converted before: the very config the model will load with
        return AutoConfig.from_pretrained(cached)
    return AutoConfig.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)  # metadata only


def model_config(source: str, trust_remote_code: bool = False) -> Any | None:
    """The transformers config of ``source`` without loading weights, or None when it is not on this machine."""
    from transformers import AutoConfig

    kind, where = resolve_source(source)
    if kind in ("gguf", "bundled"):
        return _config_from_gguf(Path(where)) if Path(where).is_file() else None
    if kind == "hub":
        from core.models.hub import _cached_snapshot

        folder = _cached_snapshot(str(where))
        if folder is None:
            return None
    else:
        folder = Path(where)
    if not (folder / "config.json").is_file():
        return None
    return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)


def model_skeleton(source: str, task: str = "causal-lm", trust_remote_code: bool = False) -> torch.nn.Module | None:
    """The model of ``source`` with every layer in place and no weights (meta tensors), or None.

    None when the config is not available here, or when building it fails (a model family this
    transformers does not know, remote code not allowed): the checks then run after loading, as before.
    """
    try:
        config = model_config(source, trust_remote_code)
        if config is None:
            return None
        with torch.device("meta"):
            model = _auto_class(task).from_config(config, trust_remote_code=trust_remote_code)
    except Exception:  # a config this transformers cannot build is checked again, after a real load
        return None
    return model.eval()
