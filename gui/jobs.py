"""Jobs the GUI runs in a JobWorker: engine calls composed into generators.

Everything that imports torch is imported inside these functions, which run in the worker
thread, so the window opens before torch is loaded.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any


@dataclass
class LoadResult:
    loaded: Any  # core.models.loading.LoadedModel
    summary: Any  # core.models.model_info.ModelSummary


@dataclass
class Environment:
    devices: list[Any]  # core.models.devices.Device
    techniques: dict[str, Any]  # name -> core.engine.registry.TechniqueInfo


def load_and_inspect(source: str, task: str, device: str) -> Generator[Any, None, LoadResult]:
    """Load a model (yielding the engine's events), then measure it."""
    from core.events import Log
    from core.models.loading import iter_load_model, stock_spare_tokenizer
    from core.models.model_info import inspect_model

    loaded = yield from iter_load_model(source, task, trust_remote_code=False, device=device)
    yield Log("Counting parameters and measuring sizes…")
    summary = inspect_model(loaded.model, loaded.source_path)
    yield Log("Preparing a tokenizer for the next run…")
    stock_spare_tokenizer(loaded)  # parsed now, so a run's start does not hold up the window
    return LoadResult(loaded, summary)


def probe_environment(source: str | None = None) -> Generator[Any, None, Environment]:
    """Find the compute devices and the registered techniques (imports torch: run it in a worker).

    With the preselected model's ``source``, also parse a spare tokenizer for its first run when
    that model is already on disk (a run that has to parse one holds up the window; see
    core.models.tokenizer_pool).
    """
    from core.events import Log
    from core.partials import sweep_leftovers

    for note in sweep_leftovers():  # what a killed earlier process left half-written (a GGUF conversion…)
        yield Log(f"Cleaned up after an earlier process that was stopped: {note}")
    yield Log("Looking for compute devices…")
    from core.engine.registry import techniques
    from core.models.devices import available_devices

    devices = available_devices()
    found = techniques()
    yield Log("Preparing the model loader…")
    _preimport_run_modules()
    _freeze_startup_objects()
    if source:
        from core.models.loading import stock_spare_tokenizer_for

        yield Log("Preparing the tokenizer…")
        stock_spare_tokenizer_for(source)
    return Environment(devices, found)


def _freeze_startup_objects() -> None:
    """Collect once, then leave everything alive now (modules, classes, functions) out of later collections.

    A full garbage collection walks every tracked object with the GIL held: about 350,000 after
    importing torch and transformers, measured at 190–200 ms, which froze the window whenever one
    fell during a run.  Frozen objects are still freed by reference counting; only reference
    cycles among them would never be collected, and right after start-up those are import-time
    leftovers.  (A model loaded before the run modules were imported sat in such a cycle; the
    pre-import above prevents that.)
    """
    import gc

    if gc.get_freeze_count() == 0:  # once per process: later start-ups (tests) would freeze their own objects
        gc.collect()
        gc.freeze()


def _preimport_run_modules() -> None:
    """Import what the first load or run needs, now, while nothing is running.

    Importing holds the GIL in long stretches (compiling, C-extension start-up); done at the start of
    a run, it showed as the worst UI stalls (bench/bench_ui_stall.py).  A failure here only means the
    import happens later, so it is ignored.
    """
    try:
        import transformers.models.llama.modeling_llama  # noqa: F401  (the bundled model's code)
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

        import core.engine.runner  # noqa: F401
        import core.eval.perplexity  # noqa: F401
    except Exception:  # pragma: no cover - an optional speed-up
        pass


def run_pipeline(recipe: Any, output_dir: str, device: str, resume: bool = False) -> Generator[Any, None, dict]:
    """Run a recipe with the core runner, recorded in the run history (imports torch here, in the worker).

    ``resume``: training steps continue from the checkpoints a cancelled run of the same recipe into
    the same ``output_dir`` left.
    """
    from core.history.store import recorded_run

    return (yield from recorded_run(recipe, output_dir, device=device, origin="app", resume=resume))
