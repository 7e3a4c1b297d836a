"""The pre-flight estimate: parameters, output size, peak memory and time of a run, before anything runs.

Worked out per technique from what each step really does (:mod:`core.engine.estimate_rules`), on the
loaded model's per-layer summary, with times from a forward pass measured on this machine
(:mod:`core.engine.throughput`) where one is kept, or from plain arithmetic until then.  The time is
split into the runner's phases (:attr:`Estimate.phase_seconds`: load, measure original, each step,
measure result, save) so a person sees where it goes and the Run page can weight its progress.
No Qt and no torch at import: the Pipeline page calls this on the GUI thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data.task_rows import task_title
from core.engine.estimate_rules import Context, Layer, Machine, rule_for
from core.engine.throughput import Throughput, load_throughput, machine_load, throughput_key, torch_threads
from core.eval.task_time import task_tokens
from core.paths import data_dir

CPU_FLOPS = 1e11  # arithmetic fallback: effective float32 FLOP/s of a laptop CPU in a forward pass
GPU_FLOPS = 2e13
# The bench machine's probe (seconds per weight per token of a forward pass): Machine.scale = this machine's / it.
REFERENCE_SECONDS_PER_PARAMETER_TOKEN = 1.2e-11
LOAD_SECONDS = 2.0  # reading, building the modules, the tokenizer …
LOAD_BYTES_PER_S = 4e8
SAVE_SECONDS = 1.0
SAVE_BYTES_PER_S = 2e8
EVAL_BATCH = 4  # windows per batch in perplexity and KL (core.eval.perplexity)
DECODE_TOKENS = 48  # new tokens per sample prompt (core.eval.speed)
SPEED_RUN_TOKENS = 160  # prefill + decode tokens timed by the speed measurement, about
_BLOCK_NAME = re.compile(r"^(.*?\.\d+)\.")  # "model.layers.3.mlp.up_proj" -> block "model.layers.3"
FLOAT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


@dataclass
class Estimate:
    parameters: int
    output_parameters: int
    output_bytes: int
    peak_bytes: int
    seconds: float
    available_bytes: int | None
    notes: list[str] = field(default_factory=list)
    output_dtype: str = ""  # how the saved weights are stored, per kind of layer ("4-bit packed (GPTQ) + …")
    output_nonzero: int = 0
    # (phase, seconds) in run order: "load", "measure original", "step 1: <technique>", …, "measure result", "save"
    phase_seconds: list[tuple[str, float]] = field(default_factory=list)
    # per measuring phase ("measure original", "measure result"): (meter, seconds) in the order the runner runs
    # them, named as its Progress events name them ("perplexity", "task ARC-Easy", "samples", "speed", "kl")
    measure_parts: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    timed: bool = False  # True: times from a forward pass measured on this machine; False: arithmetic

    @property
    def fits(self) -> bool:
        return self.available_bytes is None or self.peak_bytes <= self.available_bytes

    def step_seconds(self) -> float:
        """The steps' share of the time (what the techniques themselves take)."""
        return sum(s for name, s in self.phase_seconds if name.startswith("step "))

    def measure_seconds(self) -> float:
        return sum(s for name, s in self.phase_seconds if name.startswith("measure "))


# -- the model's layers --------------------------------------------------------------------------------
def _layers(summary: Any, stored_bits: float) -> list[Layer]:
    """The summary's per-layer rows; without them (a bare summary), a plausible split of its parameters."""
    rows = getattr(summary, "layers", None) or []
    layers = []
    for row in rows:
        shape = list(getattr(row, "shape", []) or [])
        out, width = (shape + [1, 1])[:2] if len(shape) >= 2 else (shape[0] if shape else 1, 1)
        layers.append(Layer(row.name, row.kind, int(out), int(width), int(row.params), int(row.nonzero), stored_bits))
    if layers:
        return layers
    params = int(summary.parameters)
    hidden = int(getattr(summary, "hidden_size", None) or 1024)
    vocab = getattr(summary, "vocab_size", None)
    embed = min(params // 2, int(vocab) * hidden) if vocab else params // 5
    count = max(1, int(getattr(summary, "num_layers", None) or 1))
    per_block = (params - embed) // count
    layers = [Layer("model.embed_tokens", "Embedding", int(vocab or embed // hidden), hidden, embed, embed, stored_bits)]
    for index in range(count):
        width = max(1, per_block // hidden)
        layers.append(Layer(f"model.layers.{index}.linear", "Linear", width, hidden, per_block, per_block, stored_bits))
    return layers


def _saved_format(recipe: Any, summary_dtype: str) -> tuple[str, float]:
    """(dtype name, bytes per ordinary weight) of the saved file, as core.io.save_dtype resolves ``auto``."""
    choice = getattr(getattr(recipe, "output", None), "dtype", "auto")
    if choice in FLOAT_BYTES:
        return choice, float(FLOAT_BYTES[choice])
    source = str(recipe.model.source)
    if source.startswith("bundled:") or source.lower().endswith(".gguf"):
        return "bfloat16", 2.0  # a GGUF of quantized blocks is saved as bfloat16 by auto
    name = summary_dtype or "float32"
    return name, float(FLOAT_BYTES.get(name, 4))


# -- the machine ---------------------------------------------------------------------------------------
def kept_throughput(summary: Any, recipe: Any, device: str) -> Throughput | None:
    """The probe kept for this model, device and thread count, if the model-loading job measured one."""
    try:
        key = throughput_key(str(recipe.model.source), int(summary.parameters), str(getattr(summary, "dtype", "")),
                             device, torch_threads())
        return load_throughput(key)
    except Exception:  # no torch, an unreadable file: arithmetic instead
        return None


def machine(parameters: int, device: str, throughput: Throughput | None) -> Machine:
    """Forward seconds per token of this model here, the matrix rate that implies, and the speed vs the reference."""
    if throughput is not None and throughput.seconds > 0:
        per_weight = throughput.seconds_per_parameter_token
    else:
        per_weight = 2 / (CPU_FLOPS if device == "cpu" else GPU_FLOPS)
    return Machine(device, per_weight * parameters, 2 / per_weight, per_weight / REFERENCE_SECONDS_PER_PARAMETER_TOKEN)


_KEPT_MEMO: dict[str, tuple[float, bool]] = {}
KEPT_MEMO_SECONDS = 30.0  # the check hashes the model's first and last 4 MiB: not again at every keystroke


def original_is_kept(recipe: Any, device: str) -> bool:
    """Whether the original's measurements for this recipe are kept (core.engine.original_cache): a quick check
    of file fingerprints, remembered for half a minute per setting; False whenever it cannot tell."""
    import json
    import time

    settings = json.dumps([str(data_dir()), recipe.model.source, recipe.model.task, device, recipe.seed, vars(recipe.evaluation),
                           vars(recipe.data)], sort_keys=True, default=str)
    memo = _KEPT_MEMO.get(settings)
    if memo is not None and time.monotonic() - memo[0] < KEPT_MEMO_SECONDS:
        return memo[1]
    try:
        from core.engine.original_cache import cache_folder, measurement_key  # imports torch: only when asked
        from core.models.loading import resolve_source

        kind, where = resolve_source(recipe.model.source)
        kept = kind != "hub" and (cache_folder() / f"{measurement_key(recipe, Path(where), device)}.json").is_file()
    except Exception:
        kept = False
    _KEPT_MEMO[settings] = (time.monotonic(), kept)
    return kept


# -- evaluation ----------------------------------------------------------------------------------------
def evaluation_windows(recipe: Any) -> int:
    """Windows perplexity is scored on: ``max_windows``, or all the text holds (from its file size) when 0."""
    if recipe.evaluation.max_windows:
        return int(recipe.evaluation.max_windows)
    try:
        from core.data.samples import bundled_dataset_path
        from core.data.texts import local_path

        source = recipe.data.evaluation
        path = bundled_dataset_path(source.removeprefix("bundled:")) if source.startswith("bundled:") \
            else local_path(source)
        return max(1, int(path.stat().st_size / 4.5 / recipe.data.sequence_length))
    except Exception:
        return 40


def measure_parts(recipe: Any, windows: int, per_token: float, teacher_per_token: float | None,
                  decode_seconds: float) -> list[tuple[str, float]]:
    """The meters one measuring phase runs, in the runner's order, and their seconds: perplexity, each task's
    scores, samples, speed and (after, with ``teacher_per_token``) the KL to the original (both models' passes).

    Names are those of the meters' Progress events, so the Run page can tell which are still to come."""
    evaluation = recipe.evaluation
    causal = recipe.model.task == "causal-lm"
    tokens = windows * recipe.data.sequence_length
    parts: list[tuple[str, float]] = []
    if evaluation.perplexity and causal:
        parts.append(("perplexity", tokens * per_token))
    if evaluation.tasks and causal:
        for task in evaluation.tasks:
            parts.append((f"task {task_title(task)}", task_tokens(task, evaluation.task_limit or None) * per_token))
    if evaluation.prompts and causal:
        parts.append(("samples", len(evaluation.prompts) * DECODE_TOKENS * decode_seconds))
    if evaluation.speed:
        parts.append(("speed", SPEED_RUN_TOKENS * decode_seconds))
    if teacher_per_token is not None and evaluation.kl_to_teacher and evaluation.perplexity and causal:
        parts.append(("kl", tokens * (per_token + teacher_per_token)))
    return parts


def _format_text(formats: list[str], float_name: str, any_float_left: bool) -> str:
    if not formats:
        return float_name
    text = " + ".join(dict.fromkeys(formats))
    return f"{text} + {float_name} for the rest" if any_float_left else text


# -- the estimate ----------------------------------------------------------------------------------------
def estimate(summary: Any, recipe: Any, device: str, available_bytes: int | None, *,
             throughput: Throughput | None = None, original_kept: bool | None = None) -> Estimate:
    """Estimate a run of ``recipe`` on the loaded model.

    ``summary``: core.models.model_info.ModelSummary of the loaded model (its per-layer rows make sizes exact);
    ``recipe``: core.engine.recipe.Recipe; ``throughput``: a probe (default: the one kept for this model, device
    and threads, else arithmetic); ``original_kept``: whether the original's measurements are kept (default: checked).
    """
    params = int(summary.parameters)
    in_memory = int(summary.bytes_in_memory)
    compute_dtype = str(getattr(summary, "dtype", "") or "float32")
    float_name, float_bytes = _saved_format(recipe, compute_dtype)
    layers = _layers(summary, float_bytes * 8)
    layer_params = sum(layer.params for layer in layers) or params
    if throughput is None:
        throughput = kept_throughput(summary, recipe, device)
    here = machine(params, device, throughput)
    data = recipe.data
    ctx = Context(hidden=int(getattr(summary, "hidden_size", None) or 1024),
                  num_layers=int(getattr(summary, "num_layers", None) or 1),
                  vocab=int(getattr(summary, "vocab_size", None) or 32000),
                  sequence_length=int(data.sequence_length), calibration_windows=int(data.calibration_windows),
                  compute_bytes=FLOAT_BYTES.get(compute_dtype, 4), machine=here)

    notes: list[str] = []
    formats: list[str] = []
    working = 0
    step_phases: list[tuple[str, float]] = []
    for number, (_, step) in enumerate(recipe.enabled_steps(), start=1):
        cost = rule_for(step.technique)(layers, step.config, ctx)
        step_phases.append((f"step {number}: {step.technique}", max(0.0, cost.seconds)))
        working = max(working, cost.working_bytes)
        notes += cost.notes
        if cost.stored_format:
            formats.append(cost.stored_format)
        if cost.guess:
            notes.append(f"{step.technique}: its size and time are rough guesses.")

    share = params / layer_params  # rows may miss a tied head or buffers: scale to the summary's totals
    output_params = round(sum(layer.params for layer in layers) * share)
    output_nonzero = round(sum(min(layer.nonzero, layer.params) for layer in layers) * share)
    output_bytes = round(sum(layer.params * layer.stored_bits / 8 for layer in layers) * share)
    any_float_left = any(layer.stored_bits == float_bytes * 8 for layer in layers)
    result_cost = sum(layer.params * layer.forward_cost for layer in layers) / layer_params

    windows = evaluation_windows(recipe)
    decode = 200 * here.seconds_per_token  # a decoded token costs about as much as 200 prefilled ones (overhead)
    teacher = recipe.evaluation.kl_to_teacher and recipe.evaluation.perplexity and recipe.model.task == "causal-lm"
    if original_kept is None:
        original_kept = original_is_kept(recipe, device)
    parts = {"measure original": [] if original_kept else
             measure_parts(recipe, windows, here.seconds_per_token, None, decode),
             "measure result": measure_parts(recipe, windows, here.seconds_per_token * result_cost,
                                             here.seconds_per_token, decode * result_cost)}
    phases = [("load", LOAD_SECONDS + in_memory / LOAD_BYTES_PER_S),
              ("measure original", sum(s for _, s in parts["measure original"])),
              *step_phases,
              ("measure result", sum(s for _, s in parts["measure result"])),
              ("save", SAVE_SECONDS + output_bytes / SAVE_BYTES_PER_S)]
    seconds = sum(s for _, s in phases)

    batch = min(EVAL_BATCH, windows)
    logits = batch * data.sequence_length * ctx.vocab * 4 if recipe.evaluation.perplexity else 0
    eval_working = logits * (4 if teacher else 2)
    needs_copy = teacher or any(getattr(step.config, "student", None) is not None and step.technique.startswith("distill")
                                for _, step in recipe.enabled_steps())
    peak = in_memory * (2 if needs_copy else 1) + max(working, eval_working) + in_memory // 4
    if getattr(recipe.model, "stream", False):
        whole = peak
        resident, block = streamed_bytes(layers, ctx.compute_bytes)
        # one window's logits at a time (batch 1), the windows' hidden states in and out of a block
        eval_working = (data.sequence_length * ctx.vocab * 4 * 2 + windows * data.sequence_length * ctx.hidden
                        * ctx.compute_bytes * 2) if recipe.evaluation.perplexity else 0
        peak = resident + block * 2 + max(working, eval_working)
        notes.append(f"Streamed: the peak is the weights outside the blocks ({resident / 1e6:,.0f} MB), one block "
                     f"({block / 1e6:,.0f} MB, twice while it is written) and its working memory, whatever the depth; "
                     f"in memory it would be about {whole / 1e6:,.0f} MB.")
    elif available_bytes is not None and peak > available_bytes:
        notes.append("More than the memory here: with model.stream: true in the recipe the weights stay on disk and "
                     "one decoder block at a time is brought in (Wanda, GPTQ and perplexity stream).")
    notes.append("Times from a forward pass timed on this machine when the model loaded." if throughput is not None
                 else "No forward pass of this model has been timed here yet: the time is plain arithmetic.")
    notes += _busy_notes(throughput, device)
    return Estimate(params, output_params, output_bytes, int(peak), seconds, available_bytes, notes,
                    _format_text(formats, float_name, any_float_left), output_nonzero, phases, parts,
                    throughput is not None)


def streamed_bytes(layers: list[Layer], compute_bytes: int) -> tuple[int, int]:
    """(bytes of the weights outside the repeated blocks, bytes of the largest block) for a streamed run.

    A block is every layer named ``<…>.<index>.<…>``; the rest (embedding, final norm, head) stays resident.
    """
    blocks: dict[str, int] = {}
    resident = 0
    for layer in layers:
        found = _BLOCK_NAME.match(layer.name)
        size = layer.params * compute_bytes
        if found:
            blocks[found.group(1)] = blocks.get(found.group(1), 0) + size
        else:
            resident += size
    return resident, max(blocks.values(), default=0)


def _busy_notes(throughput: Throughput | None, device: str) -> list[str]:
    """Say so when other programs share the CPUs now, or did when the forward pass was timed."""
    if device != "cpu":
        return []
    notes = []
    load, cores = machine_load()
    if load is not None and load > cores:
        notes.append(f"Other programs keep this machine busy now (load {load:.1f} on {cores} cores): "
                     "the run may take longer than this.")
    if throughput is not None and throughput.busy:
        notes.append("The forward pass was timed while the machine was busy, so these times may be long; "
                     "the next load of the model times it again.")
    return notes

