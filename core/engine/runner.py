"""Running a recipe: load, measure, apply each step, measure again, save atomically.

``run_recipe`` is a job: a generator of events that returns the run's report.  Every ``yield``
is a cancel point; closing the generator (or an exception anywhere) leaves no output folder and
never touches the source model.  Techniques are found through the registry, so the runner never
changes when one is added.
"""

from __future__ import annotations

import copy
import datetime as dt
import platform
import shutil
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.data.perplexity_windows import PerplexityWindows, perplexity_windows
from core.data.task_rows import TASKS, load_task
from core.data.texts import calibration_windows, load_labelled, load_texts, local_path, token_windows
from core.engine import distributed
from core.engine.original_cache import keep_measurements, load_measurements, measurement_key
from core.engine.preflight import check_shapes_before_loading
from core.engine.recipe import Recipe, classifier_reading
from core.engine.registry import get_technique
from core.engine.streamed import check_streamable, run_streamed
from core.errors import RecipeError
from core.eval.metrics import align_predictions, classification_metrics, iter_predict_labels
from core.eval.perplexity import iter_kl_to_teacher, iter_perplexity
from core.eval.speed import iter_generate_samples, iter_measure_speed
from core.eval.task_accuracy import iter_tasks
from core.events import Log, Metric, RunDone, StageStarted, StepDone
from core.io.output_rules import Input, check_output_dir
from core.io.save_dtype import cast_floating_weights, dtype_name, resolve_save_dtype
from core.io.saving import atomic_folder, write_model_files, write_run_files
from core.models.loading import LoadedModel, iter_load_model, resolve_source, return_tokenizer
from core.models.model_info import folder_weight_bytes, inspect_model, stored_sizes
from core.paths import cache_dir


@dataclass
class RunContext:
    """What a technique handler may use besides the model and its config."""

    recipe: Recipe
    tokenizer: Any
    device: str
    step_index: int = 0
    teacher: Any = None
    checkpoint_root: Path | None = None  # where training steps keep checkpoints (outside the output folder)
    resume: bool = False  # training steps continue from their last checkpoint
    _calibration: torch.Tensor | None = field(default=None, repr=False)
    _replacement: Any = field(default=None, repr=False)

    def replace_model(self, model: Any) -> None:
        """Make ``model`` the run's model after this step (a step whose result is a different object)."""
        self._replacement = model

    def take_replacement(self) -> Any:
        model, self._replacement = self._replacement, None
        return model

    def calibration_windows(self) -> torch.Tensor:
        """Token windows [n, sequence_length] of the recipe's calibration text (loaded once)."""
        if self._calibration is None:
            self._calibration = calibration_windows(self.recipe.data, self.tokenizer)
        return self._calibration


def check_runnable(recipe: Recipe, device: str) -> None:
    """Reject, before any work, a recipe whose steps cannot run here."""
    recipe.validate()
    if not recipe.enabled_steps():
        raise RecipeError("the recipe has no enabled steps: add or switch on at least one technique")
    for index, step in recipe.enabled_steps():
        reason = get_technique(step.technique).unavailable_reason(device=device, task=recipe.model.task)
        if reason:
            raise RecipeError(f"step {index + 1}: {reason}")


def run_inputs(recipe: Recipe, recipe_file: str | Path | None = None) -> list[Input]:
    """Everything a run reads from this machine: the model source, the data files and the recipe file.

    The output may never be, contain or lie inside any of them (see :mod:`core.io.output_rules`).  A hub
    model is not here yet; its downloaded folder is checked once it is loaded.
    """
    kind, where = resolve_source(recipe.model.source)
    found = [Input(Path(where), "the source model")] if kind != "hub" else []
    data = recipe.data
    for source, label in ((data.calibration, "the calibration data"), (data.evaluation, "the evaluation data"),
                          (data.labelled, "the labelled data")):
        path = local_path(source)
        if path is not None:
            found.append(Input(path, label))
    for task in recipe.evaluation.tasks:
        if task not in TASKS:
            found.append(Input(Path(task).expanduser(), f"the task file {Path(task).name}"))
    if recipe_file is not None:
        found.append(Input(Path(recipe_file), "the recipe file"))
    return found


def check_data(recipe: Recipe) -> None:
    """Read every data file the run will use, before the model loads (a bad file costs no loading time)."""
    data = recipe.data
    if any(get_technique(step.technique).needs.calibration_data for _, step in recipe.enabled_steps()):
        load_texts(data.calibration, data.text_column)
    if recipe.evaluation.perplexity and recipe.model.task == "causal-lm":
        load_texts(data.evaluation, data.text_column)
    if recipe.model.task == "sequence-classification":
        load_labelled(data.labelled, data.text_column, data.label_column, recipe.seed)
    if recipe.model.task == "causal-lm":
        for task in recipe.evaluation.tasks:
            load_task(task)


def check_run(recipe: Recipe, output_dir: str | Path, *, overwrite: bool = False, device: str = "cpu",
              recipe_file: str | Path | None = None) -> tuple[Path, list[Input]]:
    """Everything that can be checked before any work: steps, output folder, data files, and the steps'
    settings against the model's layer shapes (on its skeleton: no weights are loaded).

    Returns the resolved output folder and the run's inputs; raises a StudioError saying what to change.
    """
    check_runnable(recipe, device)
    inputs = run_inputs(recipe, recipe_file)
    output = check_output_dir(output_dir, inputs, overwrite)
    check_data(recipe)
    if recipe.model.stream:  # what a streamed run cannot do without the whole model, said before any work
        check_streamable(recipe)
    check_shapes_before_loading(recipe)
    return output, inputs


def _measure(model, tokenizer, recipe: Recipe, eval_windows, label: str, on_disk) -> Generator[Any, None, dict]:
    """Size, and quality on the evaluation data, as a dict; then yields its numbers as metrics."""
    summary = inspect_model(model, on_disk=on_disk, with_layers=False)
    result: dict[str, Any] = summary.to_dict(with_layers=False)
    if eval_windows is not None:
        ppl = yield from iter_perplexity(model, eval_windows)
        result["perplexity"] = ppl.to_dict()
        yield Log(f"Perplexity {label}: {ppl.perplexity:.3f} over {ppl.tokens} tokens")
    if recipe.model.task == "sequence-classification":
        data = load_labelled(recipe.data.labelled, recipe.data.text_column, recipe.data.label_column, recipe.seed)
        max_length, keep = classifier_reading(recipe)
        predicted = yield from iter_predict_labels(model, tokenizer, data.test.texts, max_length=max_length, keep=keep)
        predicted = align_predictions(predicted, getattr(model.config, "id2label", None), data.label_names)
        result["classification"] = classification_metrics(data.test.labels, predicted, data.label_names)
    if recipe.evaluation.tasks and recipe.model.task == "causal-lm":
        scores = yield from iter_tasks(model, tokenizer, recipe.evaluation.tasks,
                                       recipe.evaluation.task_limit or None, seed=recipe.seed)
        result["tasks"] = {name: score.to_dict() for name, score in scores.items()}
        for score in scores.values():
            yield Log(f"{score.title} {label}: {score.headline} {score.headline_value:.1%} "
                      f"± {score.headline_stderr:.1%} over {score.n} questions")
    if recipe.evaluation.prompts and recipe.model.task == "causal-lm":
        samples = yield from iter_generate_samples(model, tokenizer, recipe.evaluation.prompts)
        result["samples"] = [sample.to_dict() for sample in samples]
    if recipe.evaluation.speed:
        speed = yield from iter_measure_speed(model, tokenizer)
        result["speed"] = speed.to_dict()
    yield from _metrics(result, label)
    return result


def _metrics(result: dict[str, Any], label: str) -> Generator[Metric, None, None]:
    """The headline numbers of a measurement dict as Metric events (``label``: before or after)."""
    for name in ("parameters", "nonzero_parameters", "bytes_in_memory"):
        yield Metric(f"{name}/{label}", float(result[name]))
    if "perplexity" in result:
        yield Metric(f"perplexity/{label}", float(result["perplexity"]["perplexity"]))
    for key in ("accuracy", "macro_f1"):
        if key in result.get("classification", {}):
            yield Metric(f"{key}/{label}", float(result["classification"][key]))
    for name, score in result.get("tasks", {}).items():
        yield Metric(f"task/{name}/{label}", float(score[score["headline"]]))
    if "speed" in result:
        yield Metric(f"decode_tokens_per_s/{label}", float(result["speed"]["decode_tokens_per_s"]), unit="tokens/s")


def _measure_original(model, tokenizer, recipe: Recipe, eval_windows, loaded: LoadedModel,
                      device: str) -> Generator[Any, None, dict]:
    """The original's measurements: kept ones from an earlier run on the same files and settings, or new ones."""
    key = measurement_key(recipe, loaded.source_path, device)
    kept = load_measurements(key)
    if kept is not None:
        yield Log(f"Reused the original's measurements of {kept.get('measured_at', 'an earlier run')} (same model "
                  "files, data and settings): it was not measured again.")
        before = kept["before"]
        before["measured_at"] = kept.get("measured_at")
        yield from _metrics(before, "before")
        return before
    before = yield from _measure(model, tokenizer, recipe, eval_windows, "before", loaded.source_path)
    keep_measurements(key, before)
    return before


def _evaluation_windows(recipe: Recipe, tokenizer) -> PerplexityWindows | None:
    """The windows perplexity is scored on, cut in the recipe's convention."""
    if not (recipe.evaluation.perplexity and recipe.model.task == "causal-lm"):
        return None
    data = recipe.data
    texts = load_texts(data.evaluation, data.text_column)
    return perplexity_windows(texts, tokenizer, data.sequence_length, recipe.evaluation.max_windows or None,
                              recipe.evaluation.perplexity_convention)


def _comparison_windows(recipe: Recipe, tokenizer, eval_windows: PerplexityWindows) -> torch.Tensor:
    """Equal windows of the evaluation text for comparing two models position by position."""
    if eval_windows.convention == "transformers":
        return eval_windows.tokens
    data = recipe.data
    return token_windows(load_texts(data.evaluation, data.text_column), tokenizer, data.sequence_length,
                         recipe.evaluation.max_windows or None)


def _environment(device: str) -> dict[str, str]:
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": device, "machine": platform.machine()}


def _needs_original(recipe: Recipe) -> bool:
    """Whether a step trains against the run's original model (e.g. distillation after pruning)."""
    for _, step in recipe.enabled_steps():
        wants = getattr(step.config, "needs_original", None)
        if get_technique(step.technique).needs.teacher and (wants() if callable(wants) else True):
            return True
    return False


def _check_first_step_fits(recipe: Recipe, model: Any) -> None:
    """Let the first step reject settings that cannot fit this model before any measuring starts.

    Only the first step: later steps see a model that earlier steps have changed, and they check
    it themselves when they run.
    """
    steps = recipe.enabled_steps()
    check = getattr(steps[0][1].config, "check_model", None) if steps else None
    if callable(check):
        check(model)


def checkpoint_root(recipe: Recipe, output_dir: str | Path) -> Path:
    """Where a run's training checkpoints live: the cache folder, keyed by the recipe and the output path."""
    import hashlib

    key = hashlib.sha256((recipe.to_yaml() + "\n" + str(Path(output_dir).resolve())).encode()).hexdigest()[:16]
    return cache_dir() / "checkpoints" / key


def has_resumable_checkpoint(recipe: Recipe, output_dir: str | Path) -> bool:
    """Whether a cancelled run of ``recipe`` into ``output_dir`` left a training checkpoint to resume from."""
    root = checkpoint_root(recipe, output_dir)
    return root.is_dir() and any((step / "latest" / "state.pt").is_file() for step in root.iterdir())


def discard_checkpoints(recipe: Recipe, output_dir: str | Path) -> None:
    """Delete the training checkpoints a cancelled run left (the person chose to start over)."""
    shutil.rmtree(checkpoint_root(recipe, output_dir), ignore_errors=True)


def _stage_count(recipe: Recipe) -> int:
    return len(recipe.enabled_steps()) + 4  # load, measure before, each step, measure after, save


def run_recipe(recipe: Recipe, output_dir: str | Path, *, overwrite: bool = False,
               device: str = "cpu", resume: bool = False,
               recipe_file: str | Path | None = None) -> Generator[Any, None, dict]:
    """Run every enabled step of ``recipe`` and save the result to ``output_dir``; return the report.

    Training steps write checkpoints outside the output folder; ``resume=True`` continues each of
    them from its last checkpoint (after a cancel), and a finished run deletes them.  Everything is
    checked before the model loads: the steps, the output folder (``overwrite`` replaces only an
    earlier result of this app, never anything the run reads, ``recipe_file`` included) and the data.
    """
    started = time.perf_counter()
    output, inputs = check_run(recipe, output_dir, overwrite=overwrite, device=device, recipe_file=recipe_file)
    torch.manual_seed(recipe.seed)
    if recipe.model.stream:  # one block in memory at a time (core.engine.streamed); checks its own limits first
        return (yield from run_streamed(recipe, output, overwrite=overwrite, device=device, started=started))
    yield StageStarted("load", "Loading the model", 1, _stage_count(recipe))
    loaded = yield from iter_load_model(recipe.model.source, recipe.model.task, recipe.model.trust_remote_code, device,
                                        pooled_tokenizer=True)
    try:
        # a hub model's download folder is known only now
        check_output_dir(output, [*inputs, Input(loaded.source_path, "the source model")], overwrite)
        return (yield from _run_loaded(recipe, loaded, output, overwrite=overwrite, device=device, resume=resume,
                                       started=started))
    finally:
        return_tokenizer(loaded)  # for the next run (the app's window does not wait for a fresh parse)


def _run_loaded(recipe: Recipe, loaded: LoadedModel, output: Path, *, overwrite: bool, device: str, resume: bool,
                started: float) -> Generator[Any, None, dict]:
    """The run after its model is loaded: measure, run each step, measure, save."""
    enabled = recipe.enabled_steps()
    total = _stage_count(recipe)
    model, tokenizer = loaded.model, loaded.tokenizer
    _check_first_step_fits(recipe, model)
    eval_windows = _evaluation_windows(recipe, tokenizer)
    yield StageStarted("measure_before", "Measuring the original", 2, total)
    before = yield from _measure_original(model, tokenizer, recipe, eval_windows, loaded, device)
    before["on_disk_is"] = f"the source weights as stored ({loaded.source_path.name}, {loaded.kind})"
    before.update(stored_sizes(model, loaded.source_path))  # also for measurements kept from before they had it
    compare_to_original = recipe.evaluation.kl_to_teacher and eval_windows is not None
    teacher = copy.deepcopy(model) if (compare_to_original or _needs_original(recipe)) else None
    checkpoints = checkpoint_root(recipe, output)
    ctx = RunContext(recipe, tokenizer, device, teacher=teacher, checkpoint_root=checkpoints, resume=resume)

    steps = []
    for number, (index, step) in enumerate(enabled, start=1):
        info = get_technique(step.technique)
        ctx.step_index = index
        yield StageStarted("step", f"Step {number} of {len(enabled)}: {info.title}", 2 + number, total,
                           step_index=index, technique=step.technique, step_number=number,
                           total_steps=len(enabled))
        yield Log(f"Step {index + 1}: {info.title}")
        step_started = time.perf_counter()
        report = yield from info.handler(model, step.config, ctx)  # handlers choose their own grad mode
        replacement = ctx.take_replacement()
        if replacement is not None:  # e.g. distillation into a student model the user named
            model = replacement.to(device) if device != "cpu" else replacement
        record = {"index": index, **step.to_dict(), "family": info.family, "seconds": time.perf_counter() - step_started,
                  **report.to_dict()}
        steps.append(record)
        nonzero = inspect_model(model, with_layers=False).nonzero_parameters
        yield Metric("nonzero_parameters", float(nonzero), step=index, step_index=index)
        yield StepDone(index, step.technique, record)
        yield Log(report.summary)

    save_dtype, dtype_reason = resolve_save_dtype(recipe.output.dtype, model, loaded.kind, loaded.source_path)
    yield Log(f"The result's weights will be saved as {dtype_name(save_dtype)} ({dtype_reason})")
    # Round now, so the "after" measurements are of exactly the weights that will be saved.
    cast_floating_weights(model, save_dtype, keep_compute_dtype=True)
    yield StageStarted("measure_after", "Measuring the result", total - 1, total)
    after = yield from _measure(model, tokenizer, recipe, eval_windows, "after", None)
    comparison: dict[str, Any] = {}
    if teacher is not None and compare_to_original:
        kl = yield from iter_kl_to_teacher(model, teacher, _comparison_windows(recipe, tokenizer, eval_windows))
        comparison = kl.to_dict()
        yield Metric("kl_to_teacher", kl.kl_per_token, unit="nats/token")
    del teacher, ctx.teacher

    report = {"recipe": recipe.name, "source": recipe.model.source, "task": recipe.model.task,
              "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "environment": _environment(device), "before": before, "after": after,
              "comparison": comparison, "steps": steps,
              "output": {"dtype": dtype_name(save_dtype), "why": dtype_reason}}
    yield StageStarted("save", "Saving", total, total)
    cast_floating_weights(model, save_dtype)
    if not distributed.is_main():  # another process of a distributed run: rank 0 alone writes the result
        distributed.barrier()
        return report
    yield Log(f"Saving to {output}")
    with atomic_folder(output, overwrite) as folder:
        write_model_files(folder, model, tokenizer)
        after["bytes_on_disk"] = folder_weight_bytes(folder)
        after["on_disk_is"] = (f"the saved folder's weight files (safetensors, floating-point weights as "
                               f"{dtype_name(save_dtype)})")
        report["seconds"] = time.perf_counter() - started
        write_run_files(folder, recipe.to_yaml(), report)
        distributed.barrier()  # renamed into place only once every process reached the end
    shutil.rmtree(checkpoints, ignore_errors=True)  # the result is saved: checkpoints are no longer needed
    yield Metric("bytes_on_disk/after", float(after["bytes_on_disk"]))
    yield RunDone(str(output), report)
    return report
