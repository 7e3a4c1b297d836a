"""Quantization-aware training (QAT): train the quantized model against the original as teacher.

The targeted Linears become :class:`QATLinear` layers whose forward pass uses their weights rounded
to the grid the result is saved on (fake quantization with a straight-through gradient,
:mod:`fake_quant`); the model then trains through the distillation job every causal-LM training
step shares (:func:`core.techniques.distill.causal.train_on_windows`: soft targets with temperature
plus next-token cross-entropy weighted by α, evaluation with checkpoints, resume, cancel, live
loss plots), with the run's original model as teacher.  At the end each layer is converted to the
packed format with the codes and scales it was trained on, so the saved result reloads with exactly
the logits training ended with.

Where it starts (decided here, see the notes of each run):

* after a quantization step (RTN, GPTQ) the packed layers keep *their* grid: scales and zero points
  start as GPTQ's / RTN's and the latent weights at the step's Ŵ, so step 0 is exactly the PTQ
  result (the config's bits / group size / symmetry are then not used: the layers say theirs);
* from float layers, the grid starts as RTN's of the float weights (min-max or MSE-clipped, per ``clip``);
* on these int grids the zero points stay fixed, and the per-group scales train with the weights
  (``learn_scales``, the learned step size of LSQ / EfficientQAT) or stay fixed: a latent weight
  changes ŵ only when it crosses a rounding boundary, a scale moves its whole group at once, which
  is what lets a short run recover (see :func:`fake_quant.int_fake_quantize_learned_scale`);
* ``grid = q4_0 / q8_0``: llama.cpp's blocks of 32, whose scale is re-derived from the weights at
  every step as llama.cpp will derive it, so the GGUF export writes the trained values unchanged.

Only the targeted layers' weights, biases (and scales) train; embeddings, norms and the output head stay
as they arrived (they would otherwise drift towards the training text).  With ``quantize_embedding``
the token embedding is packed (RTN, as the RTN / GPTQ steps do it) *before* training, so training
sees the model exactly as it is saved; on the q4_0 / q8_0 grids it stays float, since the GGUF
export quantizes it itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.engine.targets import _matches, check_targets
from core.errors import RecipeError
from core.events import Log
from core.models.module_swap import replace_module
from core.techniques.distill.causal import split_windows, train_on_windows
from core.techniques.distill.options import LossOptions, TrainingOptions
from core.techniques.quantize.common import WeightQuantConfig, check_widths, embedding_step, size_metrics
from core.techniques.quantize.fake_quant import GGUF_GRIDS
from core.techniques.quantize.packed_format import mark_quantized
from core.techniques.quantize.packed_linear import PackedLinear
from core.techniques.quantize.qat_linear import GRIDS, QATLinear

GRID_HELP = ("int: the app's packed grid (bits and group size as set; saved for transformers/vLLM). q4_0 / q8_0: "
             "llama.cpp's blocks of 32 with its own scale rule, so the result exports to GGUF Q4_0 / Q8_0 with "
             "exactly the trained values (set bits 4 or 8, group size 32, symmetric).")


@dataclass
class QATConfig(WeightQuantConfig, LossOptions, TrainingOptions):
    grid: str = param("int", GRID_HELP, choices=GRIDS, label="Grid")
    learn_scales: bool = param(True, "Train the int grid's per-group scales along with the weights (learned step "
                               "size): each scale moves all the weights of its group at once, so short runs recover "
                               "more. Off: the scales stay those the grid started with. (Q4_0/Q8_0 grids derive "
                               "their scales from the weights, as llama.cpp does.) A scale moves by about 100× the learning "
                               "rate per step (relative), so keep the learning rate near 3e-5.", label="Learn the scales",
                               expert=True)
    sequence_length: int = param(0, "Tokens per training window (0 = the recipe's sequence length).", minimum=0,
                                 maximum=8192, label="Tokens per training window", expert=True)
    train_windows: int = param(256, "How many windows of calibration text to train on (fewer if the text is "
                               "shorter). Give at least steps × batch size, so each window is seen about once: "
                               "passing over a few windows many times fits them, not the original.", minimum=1,
                               maximum=1_000_000, label="Training windows")
    validation_windows: int = param(8, "Windows held out from the calibration text to measure perplexity and "
                                    "KL to the original at each evaluation.", minimum=1, maximum=10_000,
                                    label="Held-out windows", expert=True)

    def validate(self) -> None:
        WeightQuantConfig.validate(self)
        self.check_loss()
        self.check_training()
        if self.grid in GGUF_GRIDS:
            bits, block = GGUF_GRIDS[self.grid]
            if (self.bits, self.group_size, self.symmetric) != (bits, block, True):
                raise RecipeError(f"grid {self.grid} stores {bits} bits in symmetric blocks of {block}: set bits "
                                  f"{bits}, group_size {block} and symmetric true (got bits {self.bits}, "
                                  f"group_size {self.group_size}, symmetric {self.symmetric})")

    def needs_original(self) -> bool:
        return True

    def check_model(self, model: nn.Module) -> None:
        if not any(type(m) is PackedLinear for m in model.modules()):
            WeightQuantConfig.check_model(self, model)


def _targets(model: nn.Module, config: QATConfig) -> list[tuple[str, nn.Module]]:
    """The targeted layers: packed ones (a quantization step ran before) or float Linears."""
    check_targets(config.targets, config.ignore)
    # exactly PackedLinear: its subclasses (a packed embedding) are not Linears and stay as they are
    chosen = [(name, module) for name, module in model.named_modules()
              if (type(module) is PackedLinear or isinstance(module, nn.Linear))
              and any(_matches(name, p) for p in config.targets) and not any(_matches(name, p) for p in config.ignore)]
    if not chosen:
        raise RecipeError(f"no Linear layer matches targets {config.targets} (ignoring {config.ignore})")
    if any(isinstance(m, nn.Linear) for _, m in chosen):
        check_widths(model, config.targets, config.ignore, config.group_size)
    return chosen


def prepare_qat(model: nn.Module, config: QATConfig) -> tuple[list[tuple[str, QATLinear]], str]:
    """Swap every targeted layer for a QATLinear (frozen everything else); return them and where they started."""
    chosen = _targets(model, config)
    packed = [name for name, m in chosen if type(m) is PackedLinear]
    if packed and config.grid != "int":
        raise RecipeError(f"grid {config.grid} re-derives llama.cpp's scales, but {len(packed)} layers arrive "
                          "already quantized on the app's grid: put QAT with this grid first (from the float "
                          "model) or use grid int to keep the quantization step's grid")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    layers = []
    for name, module in chosen:
        if type(module) is PackedLinear:
            layer = QATLinear.from_packed(module, config.learn_scales)
        else:
            layer = QATLinear.from_linear(module, config.bits, config.group_size, config.symmetric, config.grid,
                                          config.clip, config.learn_scales)
        for parameter in layer.parameters():  # weight, bias and (learned scales) the scales' log gains
            parameter.requires_grad_(True)
        replace_module(model, name, layer)
        layers.append((name, layer))
    if packed and len(packed) == len(chosen):
        start = "the quantized layers as they arrived (their scales and zero points kept)"
    elif packed:
        start = f"{len(packed)} quantized layers as they arrived and {len(chosen) - len(packed)} float ones"
    else:
        start = "the float model"
    return layers, start


def finish_qat(model: nn.Module, layers: list[tuple[str, QATLinear]]) -> list[dict]:
    """Convert every QATLinear to the PackedLinear with its trained codes; return the report rows."""
    rows = []
    for name, layer in layers:
        packed = layer.to_packed()
        replace_module(model, name, packed)
        info = packed.compression_info()
        rows.append({"layer": name, "params": info["params"], "bits": info["bits"], "quant_bits": layer.bits})
    mark_quantized(model)
    return rows


@register("qat", title="Quantization-aware training", family="quantization",
          summary="Train the quantized model (2–8 bits, or llama.cpp's Q4_0/Q8_0 blocks) against the original "
                  "as teacher, so it learns to work with rounded weights; after RTN or GPTQ it starts from "
                  "their result. Slow (a training run); recovers quality that rounding alone loses at 3–4 bits.",
          config=QATConfig, needs=Needs(calibration_data=True, teacher=True, trains=True,
                                                    tasks=("causal-lm",)))
def apply_qat(model, config: QATConfig, ctx):
    """Handler: fake-quantize the targets, train with the distillation loss, convert to the packed format."""
    teacher = getattr(ctx, "teacher", None)
    if teacher is None:
        raise RecipeError("quantization-aware training needs the run's original model as teacher, and none was kept")
    train_windows, val_windows = split_windows(ctx, config)
    if config.grid in GGUF_GRIDS:  # llama.cpp quantizes the token embedding itself when it writes the file
        embedding, embedding_notes = {"embedding_quantized": 0.0}, [
            f"The token embedding stays in float: the GGUF export quantizes it to {config.grid.upper()} itself."]
    else:  # packed before training (and frozen), so training sees the model exactly as it is saved
        embedding, embedding_notes = yield from embedding_step(model, config, ctx.step_index)
    layers, start = prepare_qat(model, config)
    grid = layers[0][1]
    yield Log(f"QAT starts from {start}: {len(layers)} layers, {grid.bits} bits, group {grid.group_size or 'per-channel'}, "
              f"grid {config.grid}; only their weights" + (" and scales" if layers[0][1].learn_scale else "") + " train")
    result, teacher_ppl = yield from train_on_windows(model, teacher, train_windows, val_windows, config, ctx,
                                                      stage="Quantization-aware training", store_name="qat")
    rows = finish_qat(model, layers)
    first = result.history[0] if result.history else {}
    best = next((h for h in result.history if h["step"] == result.best_step), {})
    tokens = result.steps * config.batch_size * config.grad_accumulation * train_windows.shape[1]
    metrics = {**size_metrics(rows), **embedding, "steps": result.steps, "best_step": result.best_step or 0,
               "tokens_trained": tokens, "teacher_val_perplexity": teacher_ppl,
               "val_perplexity_start": first.get("perplexity", float("nan")),
               "val_perplexity_best": best.get("perplexity", float("nan")),
               "kl_to_teacher_start": first.get("kl_to_teacher", float("nan")),
               "kl_to_teacher_best": best.get("kl_to_teacher", float("nan")),
               "train_windows": train_windows.shape[0], "seconds": result.seconds}
    if result.resumed_from is not None:
        metrics["resumed_from_step"] = result.resumed_from
    return StepReport(
        summary=f"Quantization-aware training, {result.steps} steps ({tokens:,} tokens): validation perplexity "
                f"{metrics['val_perplexity_start']:.2f} → {metrics['val_perplexity_best']:.2f} (original "
                f"{teacher_ppl:.2f}); {metrics['bits_per_weight']:.2f} bits per weight stored.",
        metrics=metrics, layers=rows,
        notes=[f"Started from {start}; " + (("the grid's zero points stayed fixed and its scales trained (learned step size)."
                                              if config.learn_scales else
                                              "the grid's scales and zero points stayed fixed while training.")
                                             if config.grid == "int" else f"{config.grid} scales were re-derived "
                                             "from the weights at every step, as llama.cpp derives them."),
               *embedding_notes,
               "Only the quantized layers' weights (and their scales) trained; validation windows are held out from the calibration "
               "text, the recipe's evaluation text is not used to pick the checkpoint."])
