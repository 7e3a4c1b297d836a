"""Helpers shared by tests (imported as ``tests.helpers``); the last three drive the GUI's main window."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import yaml


def folder_digest(folder: Path) -> str:
    """A hash of every file's name and bytes: proves a source folder was not modified."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def collect(job):
    """Run a job generator to the end; return (events, result)."""
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            return events, stop.value


def write_recipe(path: Path, model_dir: Path, text_file: Path, **extra) -> Path:
    """A small magnitude-pruning recipe over the tiny model and a local text file."""
    recipe = {
        "version": 1, "name": "tiny test",
        "model": {"source": str(model_dir)},
        "data": {"calibration": str(text_file), "evaluation": str(text_file), "sequence_length": 16,
                 "calibration_windows": 4},
        "evaluation": {"max_windows": 4},
        "steps": [{"technique": "magnitude_prune", "params": {"sparsity": 0.5}}],
    }
    for key, value in extra.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_step(tmp_path: Path, model_dir: Path, text_file: Path, technique: str, params: dict, *,
             out: str = "out", **extra):
    """Run one technique step on the tiny model through the runner (no KL measure); return (events, report)."""
    from core.engine.recipe import load_recipe
    from core.engine.runner import run_recipe

    extra["evaluation"] = {"kl_to_teacher": False, **extra.get("evaluation", {})}
    path = write_recipe(tmp_path / "recipe.yaml", model_dir, text_file,
                        steps=[{"technique": technique, "params": params}], **extra)
    return collect(run_recipe(load_recipe(path), tmp_path / out))


def saved_perplexity(folder: Path, text_file: Path, sequence_length: int = 16, windows: int = 4) -> float:
    """Perplexity of the model saved in ``folder`` on ``text_file``, computed here from its logits:
    exp of the mean negative log-likelihood of every next token in the evaluation windows."""
    import torch

    from core.data.texts import load_texts, token_windows
    from core.models.loading import load_model

    loaded = load_model(str(folder))
    ids = token_windows(load_texts(str(text_file)), loaded.tokenizer, sequence_length, windows)
    with torch.no_grad():
        logits = loaded.model(ids).logits.float()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    return float(torch.exp(nll))


def slowed(real, delay: float):
    """``real`` (a job generator function) with a pause of ``delay`` seconds before each event.

    The tiny model is too quick to catch mid-run otherwise.
    """

    def slowed_job(*args):
        job = real(*args)
        try:
            while True:
                event = next(job)
                time.sleep(delay)
                yield event
        except StopIteration as stop:
            return stop.value
        finally:
            job.close()

    return slowed_job


def choose_model(qtbot, window, model_dir, timeout_ms: int) -> None:
    """Load ``model_dir`` on the Model page and wait until the page is idle again."""
    model = window.model_panel
    model.set_source(str(model_dir))
    with qtbot.waitSignal(model.model_loaded, timeout=timeout_ms):
        model.load()
    qtbot.waitUntil(lambda: not model.is_busy())


def small_data(box, text_file) -> None:
    """Calibrate and evaluate on ``text_file`` in a few 16-token windows, so a tiny run takes seconds."""
    box.calibration.set_value(str(text_file))
    box.evaluation_text.set_value(str(text_file))
    box.data_form.set_value("sequence_length", 16)
    box.data_form.set_value("calibration_windows", 4)
    box.eval_form.set_value("max_windows", 4)
