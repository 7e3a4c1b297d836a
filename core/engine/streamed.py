"""A recipe run on a model bigger than memory: ``model.stream: true`` in the recipe.

The model is opened as a skeleton whose blocks stay in the safetensors files
(:mod:`core.models.streaming`); every step then passes over the blocks once, in order, through the
shared calibration engine: read block i from the files, gather its statistics on the windows coming
out of the (already compressed) block i-1, compress it, write it into the next shard of the output,
drop it.  Perplexity before and after is measured the same way (:mod:`core.engine.streamed_eval`),
the "after" one reading the shards just written.  Peak memory is the embedding and head, one block,
its statistics and the hidden states of the windows, whatever the depth.

Narrow on purpose: Llama-shaped causal LMs from a safetensors folder (or a GGUF already converted
into the cache); the steps Wanda pruning (uniform, dense) and GPTQ quantization (saved packed, as in
memory: a step may write another module in place of a Linear, see ``StreamContext.replacements``);
perplexity as the only measurement.  Anything needing the
whole model at once is refused before any work by :func:`check_streamable`, in one line.
Several steps chain: each reads the shards the one before it wrote (kept in a hidden folder inside
the output's temporary folder, so nothing stays behind on failure).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.data.perplexity_windows import perplexity_windows
from core.data.texts import calibration_windows, load_texts
from core.engine.calibration import find_blocks
from core.engine.recipe import Recipe
from core.engine.registry import StepReport, get_technique
from core.engine.streamed_eval import iter_streamed_perplexity
from core.errors import RecipeError
from core.events import Log, Metric, RunDone, StageStarted, StepDone
from core.io.save_dtype import dtype_name, resolve_save_dtype
from core.io.saving import atomic_folder, write_run_files
from core.io.stream_saving import ShardWriter
from core.models.loading import _parse_tokenizer_or_explain, gguf_cache_folder, resolve_source
from core.models.model_info import folder_weight_bytes
from core.models.module_swap import replace_module
from core.models.streaming import SafetensorsReader, block_stream, open_streamed

TURN_OFF = "set model.stream: false to run it in memory"


def streamed_source(recipe: Recipe) -> Path:
    """The safetensors folder a streamed run reads; RecipeError when the source has none."""
    kind, where = resolve_source(recipe.model.source)
    folder = Path(where)
    if kind in ("gguf", "bundled") and folder.is_file():
        folder = gguf_cache_folder(folder)
        if not (folder / "config.json").is_file():
            raise RecipeError(f"{Path(where).name} is a GGUF file not converted yet: run it once in memory (the "
                              "conversion loads it whole) or convert it to a safetensors folder, then stream")
    if kind == "hub":
        raise RecipeError("streaming reads a local safetensors folder: download the hub model first")
    if not (folder / "config.json").is_file():
        raise RecipeError(f"{folder} has no config.json: streaming needs a transformers safetensors folder")
    return folder


def check_streamable(recipe: Recipe) -> None:
    """Refuse, before any work and in one line, what a streamed run cannot do without the whole model."""
    if recipe.model.task != "causal-lm":
        raise RecipeError(f"streaming runs causal language models only, not {recipe.model.task}; {TURN_OFF}")
    if recipe.model.trust_remote_code:
        raise RecipeError(f"streaming builds stock model families only (no remote code); {TURN_OFF}")
    for index, step in recipe.enabled_steps():
        title = get_technique(step.technique).title
        if step.technique not in STREAMED_STEPS:
            can = " and ".join(get_technique(name).title for name in sorted(STREAMED_STEPS))
            raise RecipeError(f"step {index + 1} ({title}) needs the whole model at once; a streamed run does "
                              f"only {can}: {TURN_OFF}")
        config = step.config
        if step.technique == "wanda_prune" and (config.schedule != "uniform" or config.save_format != "dense"):
            raise RecipeError(f"step {index + 1} ({title}): streamed Wanda does the uniform schedule and the dense "
                              f"format only; {TURN_OFF}")
        if step.technique == "gptq_quantize" and config.quantize_embedding:
            raise RecipeError(f"step {index + 1} ({title}): quantizing the token embedding needs the whole model "
                              f"(set quantize_embedding: false, or {TURN_OFF})")
    evaluation = recipe.evaluation
    if evaluation.tasks or evaluation.speed or evaluation.prompts:
        raise RecipeError("task accuracy, speed and sample answers need the whole model at once; a streamed run "
                          f"measures perplexity only (remove them, or {TURN_OFF})")
    streamed_source(recipe)


@dataclass
class StreamContext:
    """What a streamed step uses: the recipe's calibration windows (tokenized once), device, step index."""

    recipe: Recipe
    tokenizer: Any
    device: str
    step_index: int = 0
    # module name -> the module to write in its place when its block is written (a packed layer for a Linear);
    # it then stays in the model's skeleton, on meta, so later passes read it back from the shards
    replacements: dict[str, torch.nn.Module] = field(default_factory=dict)
    finishers: list[Callable[[Any, Path], None]] = field(default_factory=list)  # (model, folder) once written
    zeros_written: int = 0  # zero values in the floating-point tensors the last step wrote
    _windows: torch.Tensor | None = field(default=None, repr=False)

    def calibration_windows(self) -> torch.Tensor:
        """Token windows [n, sequence_length] of the recipe's calibration text (loaded once)."""
        if self._windows is None:
            self._windows = calibration_windows(self.recipe.data, self.tokenizer)
        return self._windows


StreamedStep = Callable[[Any, Any, StreamContext], Generator[Any, None, StepReport]]
STREAMED_STEPS: dict[str, StreamedStep] = {}  # technique name -> its streamed body (core.techniques.streamed_steps)


def register_streamed(technique: str) -> Callable[[StreamedStep], StreamedStep]:
    """Decorator: ``technique`` can run on a streamed model through this function."""
    def add(function: StreamedStep) -> StreamedStep:
        STREAMED_STEPS[technique] = function
        return function
    return add




def _non_block_tensors(model, blocks_name: str) -> dict[str, torch.Tensor]:
    """The tensors outside the blocks, each stored once (a head tied to the embedding is not written twice)."""
    found: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name.startswith(blocks_name + ".") or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        found[name] = tensor
    return found


def write_streamed_step(model, step, ctx: StreamContext, folder: Path,
                        save_dtype: torch.dtype | None) -> Generator[Any, None, StepReport]:
    """Run one streamed step, writing each finished block into ``folder``'s shards; return its report."""
    stream = block_stream(model)
    blocks_name, blocks = find_blocks(model)
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder, len(blocks) + 1, save_dtype)

    def write_block(name: str, block) -> None:
        replaced = {key: module for key, module in ctx.replacements.items() if key.startswith(name + ".")}
        tensors = {f"{name}.{key}": value for key, value in block.state_dict().items()
                   if not any(f"{name}.{key}".startswith(module + ".") for module in replaced)}
        for module_name, module in replaced.items():
            tensors.update({f"{module_name}.{key}": value for key, value in module.state_dict().items()})
            old = model.get_submodule(module_name)
            replace_module(model, module_name, module.to("meta"))
            old.to_empty(device="meta")  # the engine still holds the replaced Linear: drop its weights too
            del ctx.replacements[module_name]
        writer.write(tensors)

    stream.on_offload = write_block
    try:
        report = yield from STREAMED_STEPS[step.technique](model, step.config, ctx)
    finally:
        stream.on_offload = None
        ctx.replacements.clear()
    writer.write(_non_block_tensors(model, blocks_name))
    writer.finish()
    model.config.save_pretrained(folder)
    for finish in ctx.finishers:
        finish(model, folder)
    ctx.finishers.clear()
    ctx.zeros_written = writer.zeros
    return report


def _measure(model, eval_windows, device, label: str) -> Generator[Any, None, dict]:
    unique = {id(p): p for p in model.parameters()}.values()  # a tied head once
    result: dict[str, Any] = {"parameters": sum(p.numel() for p in unique)}
    if eval_windows is not None:
        ppl = yield from iter_streamed_perplexity(model, eval_windows, device)
        result["perplexity"] = ppl.to_dict()
        yield Log(f"Perplexity {label} (streamed): {ppl.perplexity:.3f} over {ppl.tokens} tokens")
        yield Metric(f"perplexity/{label}", ppl.perplexity)
    return result


def run_streamed(recipe: Recipe, output: Path, *, overwrite: bool = False, device: str = "cpu",
                 started: float | None = None) -> Generator[Any, None, dict]:
    """Run ``recipe`` streamed (see the module docstring) into ``output``; the output checks are done already."""
    started = time.perf_counter() if started is None else started
    check_streamable(recipe)
    source = streamed_source(recipe)
    enabled = recipe.enabled_steps()
    total = len(enabled) + 4
    yield StageStarted("load", "Opening the model (streamed: one block in memory at a time)", 1, total)
    tokenizer = _parse_tokenizer_or_explain(source, False)
    model = open_streamed(source, lambda skeleton: find_blocks(skeleton)[0], device)
    stream = block_stream(model)
    if recipe.evaluation.kl_to_teacher:
        yield Log("The comparison with the original (KL) needs both whole models at once: not measured when streaming.")
    eval_windows = None
    if recipe.evaluation.perplexity:
        data = recipe.data
        eval_windows = perplexity_windows(load_texts(data.evaluation, data.text_column), tokenizer,
                                          data.sequence_length, recipe.evaluation.max_windows or None,
                                          recipe.evaluation.perplexity_convention)
    yield StageStarted("measure_before", "Measuring the original", 2, total)
    before = yield from _measure(model, eval_windows, device, "before")
    before.update(bytes_on_disk=folder_weight_bytes(source),
                  on_disk_is=f"the source weights as stored ({source.name}, safetensors)")
    save_dtype, dtype_reason = resolve_save_dtype(recipe.output.dtype, model, "folder", source)
    ctx = StreamContext(recipe, tokenizer, device)
    steps = []
    with atomic_folder(output, overwrite) as folder:
        for number, (index, step) in enumerate(enabled, start=1):
            info = get_technique(step.technique)
            ctx.step_index = index
            yield StageStarted("step", f"Step {number} of {len(enabled)}: {info.title} (streamed)", 2 + number, total,
                               step_index=index, technique=step.technique, step_number=number,
                               total_steps=len(enabled))
            step_started = time.perf_counter()
            last = number == len(enabled)
            target = folder if last else folder / f".stream-step-{number}"
            report = yield from write_streamed_step(model, step, ctx, target, save_dtype if last else None)
            if number == 1:  # every block of the source has been read once by now: its zeros are counted
                before["nonzero_parameters"] = before["parameters"] - sum(stream.zeros.values())
            stream.set_reader(SafetensorsReader(target))  # the next step (or the measurement) reads this result
            if number > 1:
                shutil.rmtree(folder / f".stream-step-{number - 1}", ignore_errors=True)
            record = {"index": index, **step.to_dict(), "family": info.family,
                      "seconds": time.perf_counter() - step_started, **report.to_dict()}
            steps.append(record)
            yield StepDone(index, step.technique, record)
            yield Log(report.summary)
        if (source / "generation_config.json").is_file():
            shutil.copy2(source / "generation_config.json", folder / "generation_config.json")
        tokenizer.save_pretrained(folder)
        yield StageStarted("measure_after", "Measuring the result", total - 1, total)
        after = yield from _measure(model, eval_windows, device, "after")
        after["bytes_on_disk"] = folder_weight_bytes(folder)
        after["parameters"] = before["parameters"]  # every streamed step keeps the shapes (packed layers too)
        after["nonzero_parameters"] = after["parameters"] - ctx.zeros_written
        after["on_disk_is"] = f"the saved folder's weight files (safetensors, floating-point weights as {dtype_name(save_dtype)})"
        yield StageStarted("save", "Saving", total, total)
        report = {"recipe": recipe.name, "source": recipe.model.source, "task": recipe.model.task, "streamed": True,
                  "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "before": before, "after": after,
                  "steps": steps, "output": {"dtype": dtype_name(save_dtype), "why": dtype_reason},
                  "peak_resident_parameter_bytes": stream.peak_resident_bytes,
                  "seconds": time.perf_counter() - started}
        write_run_files(folder, recipe.to_yaml(), report)
    stream.reader.close()
    yield Metric("bytes_on_disk/after", float(after["bytes_on_disk"]))
    yield RunDone(str(output), report)
    return report
