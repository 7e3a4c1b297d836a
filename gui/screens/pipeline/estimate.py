"""The pre-flight estimate: output size, peak memory and a rough time, before anything runs.

Plain arithmetic on the loaded model's summary and the recipe (no Qt, no torch).  Known
techniques have a size rule and a speed rate; a technique this file does not know is assumed to
keep the size and to cost like a calibration pass, and the estimate says it is a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CPU_FLOPS = 1e10  # effective float32 operations per second on a busy laptop CPU (deliberately modest)
GPU_FLOPS = 2e12
# technique -> (passes over the calibration tokens, extra seconds per million weights)
RATES = {"magnitude_prune": (0, 0.01), "wanda_prune": (1, 0.5), "sparsegpt_prune": (1, 2.0),
         "mlp_prune": (1, 0.5), "layer_drop": (1, 0.1)}
UNSTRUCTURED = {"magnitude_prune", "wanda_prune", "sparsegpt_prune"}


@dataclass
class Estimate:
    parameters: int
    output_parameters: int
    output_bytes: int
    peak_bytes: int
    seconds: float
    available_bytes: int | None
    notes: list[str] = field(default_factory=list)
    output_dtype: str = ""  # the floating-point format of the saved weights

    @property
    def fits(self) -> bool:
        return self.available_bytes is None or self.peak_bytes <= self.available_bytes


def _size_factor(technique: str, config: Any, notes: list[str], current_bits: float) -> float:
    """Share of the weights' bytes a step keeps in the saved file."""
    if technique in UNSTRUCTURED:
        notes.append("Pruning to zeros does not shrink the saved file: zeros in a dense tensor take as "
                     "many bytes as any other number.")
        return 1.0
    if technique == "dynamic_int8":
        notes.append("Dynamic int8 saves float weights holding the int8 values, so plain transformers loads the "
                     "folder: the file is not smaller; the int8 layers are smaller in memory once loaded here.")
        return 1.0
    if technique == "mlp_prune":
        return 1.0 - 0.6 * float(getattr(config, "reduction", 0.0))  # MLPs hold about 60% of the weights
    bits = getattr(config, "bits", None)
    if isinstance(bits, int | float) and bits > 0:  # + about 10% for scales; embeddings often stay as they are
        return min(1.0, 0.2 + 0.8 * bits * 1.1 / current_bits)
    reduction = getattr(config, "target_reduction", None)
    if isinstance(reduction, int | float):
        return 1.0 - 0.8 * reduction  # the targeted Linears hold about 80% of the weights
    if technique not in RATES:
        notes.append(f"{technique}: size and time are guesses (no estimate rule for it yet).")
    return 1.0


def _saved_format(recipe: Any, in_memory: float, memory_dtype: str) -> tuple[str, float]:
    """(dtype name, bytes per ordinary weight) of the saved file, from the recipe's output dtype (core.io.save_dtype)."""
    choice = getattr(getattr(recipe, "output", None), "dtype", "auto")
    if choice in ("bfloat16", "float16"):
        return choice, 2.0
    if choice == "float32":
        return choice, 4.0
    source = str(recipe.model.source)
    if source.startswith("bundled:") or source.lower().endswith(".gguf"):
        return "bfloat16", 2.0  # a GGUF of quantized blocks is saved as bfloat16 by auto
    return memory_dtype, in_memory


def estimate(summary: Any, recipe: Any, device: str, available_bytes: int | None) -> Estimate:
    """``summary``: core.models.model_info.ModelSummary of the loaded model; ``recipe``: core.engine.recipe.Recipe."""
    notes: list[str] = []
    params = int(summary.parameters)
    in_memory = int(summary.bytes_in_memory)
    bytes_per_weight = in_memory / params if params else 4.0
    output_dtype, saved_bytes_per_weight = _saved_format(recipe, bytes_per_weight,
                                                         str(getattr(summary, "dtype", "") or "float32"))
    factor = 1.0
    steps = [s for _, s in recipe.enabled_steps()]
    for step in steps:
        factor *= _size_factor(step.technique, step.config, notes, saved_bytes_per_weight * 8)
    if any(s.technique == "layer_drop" for s in steps) and summary.num_layers:
        dropped = sum(getattr(s.config, "layers_to_drop", 0) for s in steps if s.technique == "layer_drop")
        factor *= max(0.0, 1 - 0.9 * dropped / summary.num_layers)
    output = int(params * factor * saved_bytes_per_weight)

    data = recipe.data
    hidden = summary.hidden_size or 1024
    tokens = data.sequence_length * data.calibration_windows
    activations = tokens * hidden * 4 * 4  # block inputs and outputs, float32, plus the hooks' statistics
    teacher = recipe.evaluation.kl_to_teacher and recipe.evaluation.perplexity
    peak = in_memory * (2 if teacher else 1) + in_memory // 4 + activations  # + one layer's working copy

    flops = CPU_FLOPS if device == "cpu" else GPU_FLOPS
    eval_tokens = data.sequence_length * (recipe.evaluation.max_windows or 40)
    evaluations = (2 + (1 if teacher else 0)) * eval_tokens if recipe.evaluation.perplexity else 0
    passes = 0.0
    extra = 0.0
    for step in steps:
        step_passes, per_million = RATES.get(step.technique, (1, 0.01))
        if step.technique == "dynamic_int8":  # SmoothQuant's statistics pass over its own windows, if on
            share = min(1.0, getattr(step.config, "smoothing_windows", 16) / max(1, data.calibration_windows))
            step_passes = share if getattr(step.config, "smoothing", 0) > 0 else 0
        if getattr(step.config, "schedule", None) == "owl":  # OWL measures outliers in a pass of its own first
            step_passes += 1
        passes += step_passes
        extra += per_million * params / 1e6 * (1 if device == "cpu" else 0.1)
    seconds = 2 * params * (evaluations + passes * tokens) / flops + extra + 2 + output / 2e8  # + load, save
    return Estimate(params, int(params * factor), output, peak, seconds, available_bytes, notes, output_dtype)
