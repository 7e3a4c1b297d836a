"""Training checkpoints: the student's weights (safetensors) and the trainer's state, kept outside the output.

A store is one folder (the runner gives every step its own, under the app's cache folder, keyed by
the recipe and the output path), holding:

* ``latest/weights.safetensors`` + ``latest/state.pt``: written at every evaluation, so a cancelled
  run can continue from it (``--resume``);
* ``best.safetensors``: the weights with the best validation metric so far, the step's output.

Each write goes to a temporary name first and is then renamed, so a checkpoint is either complete
or absent.  The state (step, optimizer moments, random-number state, evaluation history) is read
back with ``torch.load(weights_only=True)``: only tensors and plain containers, never pickled code.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from core.errors import StudioError


class CheckpointStore:
    """Save and restore a training run's checkpoints in ``folder``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def latest(self) -> Path:
        return self.folder / "latest"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.safetensors"

    def clear(self) -> None:
        """Forget every checkpoint (a run that does not resume starts clean)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def has_checkpoint(self) -> bool:
        return (self.latest / "state.pt").is_file() and (self.latest / "weights.safetensors").is_file()

    def save(self, model: torch.nn.Module, state: dict[str, Any]) -> None:
        """Write the weights and trainer state as the latest checkpoint (atomically, as one folder)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / "latest.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        save_model(model, str(partial / "weights.safetensors"))
        torch.save(state, partial / "state.pt")
        old = self.folder / "latest.old"
        if self.latest.exists():
            os.replace(self.latest, old)
        os.replace(partial, self.latest)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """Load the latest weights into ``model`` and return the trainer state, or None if there is none."""
        if not self.has_checkpoint():
            return None
        try:
            state = torch.load(self.latest / "state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged, or holding more than tensors (weights_only refused to unpickle it)
            # torch's own message ends by advising weights_only=False, which would run the file's code: never shown.
            raise StudioError(f"the checkpoint {self.latest / 'state.pt'} is damaged or was not written by this "
                              "app, so it was not loaded; run again without resume to start over") from exc
        if not isinstance(state, dict):
            raise StudioError(f"the checkpoint {self.latest / 'state.pt'} is not one this app wrote; run again "
                              "without resume to start over")
        try:
            _load_weights(model, self.latest / "weights.safetensors")
        except StudioError:
            raise
        except Exception as exc:
            raise StudioError(f"the checkpoint weights {self.latest / 'weights.safetensors'} are damaged "
                              f"({str(exc).splitlines()[0][:120]}); run again without resume to start over") from exc
        return state

    def save_best(self, model: torch.nn.Module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / "best.partial.safetensors"
        save_model(model, str(partial))
        os.replace(partial, self.best_path)

    def load_best(self, model: torch.nn.Module) -> bool:
        """Load the best weights into ``model``; False if none were saved."""
        if not self.best_path.is_file():
            return False
        _load_weights(model, self.best_path)
        return True


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    device = next(model.parameters()).device
    missing, unexpected = load_model(model, str(path), strict=False, device=str(device))
    if unexpected or [m for m in missing if not _is_tied(model, m)]:
        raise StudioError(f"the checkpoint {path} does not fit this model (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}); the recipe changed since it was written: run without resume")


def _is_tied(model: torch.nn.Module, name: str) -> bool:
    """safetensors stores a tied weight once; the other name is reported missing but is not."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    names = tied if isinstance(tied, dict) else {k: None for k in tied}
    return name in names or name.endswith("lm_head.weight")
