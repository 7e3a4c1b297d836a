"""Downloading a model from the Hugging Face hub, with progress as events.

The user's own hub cache (``HF_HOME`` / ``HF_HUB_CACHE``) is used, so a model downloaded by any
other tool is not downloaded again, and a cached model loads with no network at all.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from core.errors import ModelLoadError, RunCancelled
from core.events import Log, Progress

CONFIG_FILES = ["config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json", "vocab*",
                "merges.txt", "*.model", "added_tokens.json", "chat_template*"]
POLL_SECONDS = 0.25
NETWORK_HINTS = ("connect", "name or service not known", "name resolution", "network is unreachable", "timed out")


class _DownloadState:
    def __init__(self) -> None:
        self.bars: list[tqdm] = []
        self.cancelled = threading.Event()
        self.result: str | None = None
        self.error: BaseException | None = None

    def bytes(self) -> tuple[float, float]:
        byte_bars = [b for b in self.bars if getattr(b, "unit", "") == "B" and "Reconstruct" in str(b.desc)]
        bars = byte_bars or [b for b in self.bars if getattr(b, "unit", "") == "B"]
        return sum(b.n for b in bars), sum(b.total or 0 for b in bars)


def _recording_tqdm(state: _DownloadState) -> type:
    class RecordingTqdm(tqdm):
        """A silent progress bar that lets the job read how far the download is, and stop it."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed with the bar
            super().__init__(*args, **kwargs)
            state.bars.append(self)

        def update(self, n: float | None = 1) -> bool | None:
            if state.cancelled.is_set():
                raise RunCancelled("download cancelled")
            return super().update(n)

    return RecordingTqdm


def _weight_patterns(repo_id: str) -> list[str]:
    from huggingface_hub import HfApi

    files = [s.rfilename for s in HfApi().model_info(repo_id, files_metadata=False).siblings or []]
    if any(f.endswith(".safetensors") for f in files):
        return ["*.safetensors", "*.safetensors.index.json"]
    if any(f.endswith(".bin") for f in files):
        return ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
    raise ModelLoadError(f"{repo_id} on the hub has no safetensors or PyTorch weights this app can load")


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))
    return folder if has_weights and (folder / "config.json").is_file() else None


def _explain(repo_id: str, exc: BaseException) -> ModelLoadError:
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        return ModelLoadError(f"{repo_id} is gated: accept its licence on the hub, then log in with `hf auth login`")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelLoadError(f"{repo_id} does not exist on the Hugging Face hub (or is private: log in with "
                              "`hf auth login`); check the spelling owner/name")
    lowered = str(exc).lower()
    if isinstance(exc, OfflineModeIsEnabled | ConnectionError | TimeoutError) or any(k in lowered for k in NETWORK_HINTS):
        return ModelLoadError(f"cannot reach the Hugging Face hub to download {repo_id}, and it is not in your "
                              "hub cache: connect to the internet, or open a local folder or .gguf file instead")
    return ModelLoadError(f"downloading {repo_id} failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")


def iter_download(repo_id: str) -> Generator[Any, None, Path]:
    """Download (or find in the cache) a hub model's config, tokenizer and weights; return its folder."""
    cached = _cached_snapshot(repo_id)
    if cached is not None:
        yield Log(f"Using {repo_id} from your Hugging Face cache ({cached})")
        return cached
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelLoadError(f"{repo_id} is not in your Hugging Face cache and offline mode is on "
                             "(HF_HUB_OFFLINE=1): go online, or open a local folder or .gguf file")
    try:
        patterns = CONFIG_FILES + _weight_patterns(repo_id)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise _explain(repo_id, exc) from exc

    state = _DownloadState()

    def download() -> None:
        try:
            state.result = snapshot_download(repo_id, allow_patterns=patterns,
                                             tqdm_class=_recording_tqdm(state))
        except BaseException as exc:  # handed to the job's thread below
            state.error = exc

    thread = threading.Thread(target=download, name=f"download {repo_id}", daemon=True)
    thread.start()
    yield Log(f"Downloading {repo_id} from the Hugging Face hub")
    start = time.perf_counter()
    try:
        while thread.is_alive():
            thread.join(POLL_SECONDS)
            done, total = state.bytes()
            eta = (time.perf_counter() - start) * (total - done) / done if done and total else None
            yield Progress(f"Downloading {repo_id}", done, total, eta)
    finally:
        state.cancelled.set()  # a closed job stops the download at its next chunk
    if state.error is not None:
        raise _explain(repo_id, state.error) from state.error
    return Path(state.result)
