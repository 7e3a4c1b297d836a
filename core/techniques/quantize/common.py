"""What RTN and GPTQ share: config checks, swapping a Linear for a PackedLinear, the step report."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from core.engine.params import param
from core.engine.targets import DEFAULT_IGNORE, DEFAULT_TARGETS, check_targets, select_linears
from core.errors import RecipeError
from core.techniques.quantize.embedding import (
    EMBEDDING_BITS_HELP,
    EMBEDDING_HELP,
    check_embedding,
    quantize_embedding,
)
from core.techniques.quantize.grid import check_group_size

BITS_HELP = "Bits per weight, 2 to 8. 4 is the usual choice; 8 is nearly lossless; 3 and 2 lose quality fast."
GROUP_HELP = ("Consecutive input weights sharing one scale (and zero point). Smaller groups keep more "
              "quality but store more scales: 4-bit with 16-bit scales costs 4 + 16/group bits per weight. "
              "It must divide every targeted layer's input width (e.g. 576 allows 32, 64, 96, 192, 288, 576); "
              "0 means one scale per output channel.")
SYMMETRIC_HELP = ("Symmetric: codes centred on zero, one scale per group. Asymmetric: also a zero point per "
                  "group, fitting lopsided weight ranges better for a little more storage (4-bit g64: 4.56 "
                  "instead of 4.50 bits per weight). On the bundled model asymmetric GPTQ with act-order was "
                  "much better than symmetric (21.3 vs 23.5 perplexity). Plain transformers cannot load asymmetric "
                  "packed folders yet; this app can.")
CLIP_HELP = ("How each group's range is chosen. none: from its smallest to its largest weight (min-max). "
             "mse: search how far to shrink the range (clipping the few largest weights) so the rounding "
             "error of the whole group is smallest. On the bundled model at 4 bits it helped GPTQ (asymmetric "
             "with act-order: 20.6 vs 21.3 perplexity, the best 4-bit result) but not plain rounding (24.8 vs "
             "24.1). Slower with plain rounding; with GPTQ act-order it cost almost nothing.")
CLIP_CHOICES = ("none", "mse")
FORMAT_NAME = "compressed-tensors-pack-quantized"
# Same files; named apart because transformers 5.23 + compressed-tensors 0.20 cannot load packed zero points.
ASYMMETRIC_FORMAT_NAME = "compressed-tensors-pack-quantized-asymmetric"
# Same files with the token embedding packed too; transformers 5.25 + compressed-tensors 0.20 cannot load that.
EMBEDDING_FORMAT_NAME = "compressed-tensors-pack-quantized-embedding"


def check_bits(bits: int) -> None:
    """Reject bit widths outside 2..8 with the usual choice named."""
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise RecipeError(f"bits={bits!r} is not supported: choose 2–8 bits; 4 is the usual choice")


def check_group_setting(group_size: int) -> None:
    """Reject negative or tiny group sizes before any model is seen."""
    if not isinstance(group_size, int) or group_size < 0 or 0 < group_size < 8:
        raise RecipeError(f"group_size={group_size!r} is not supported: use 0 (per output channel) or a "
                          "group of at least 8 inputs; 32, 64 and 128 are the usual choices")


@dataclass
class WeightQuantConfig:
    """The settings every packed weight quantizer (RTN, GPTQ, mixed precision) shares."""

    bits: int = param(4, BITS_HELP, label="Bits per weight")
    group_size: int = param(64, GROUP_HELP, label="Group size")
    symmetric: bool = param(True, SYMMETRIC_HELP, label="Symmetric range (no zero point)", expert=True)
    clip: str = param("none", CLIP_HELP, choices=CLIP_CHOICES, label="Range search (clipping)", expert=True)
    targets: list[str] = param(list(DEFAULT_TARGETS), "Layer name patterns to quantize (shell globs, or re:regex).",
                               label="Layers to quantize (patterns)", expert=True)
    ignore: list[str] = param(list(DEFAULT_IGNORE), "Layer name patterns never quantized (the output head by default).",
                              label="Layers to skip (patterns)", expert=True)
    quantize_embedding: bool = param(True, EMBEDDING_HELP, label="Quantize the token embedding too")
    embedding_bits: int = param(8, EMBEDDING_BITS_HELP, label="Bits for the token embedding", expert=True)

    def validate(self) -> None:
        """Reject settings that cannot work (RecipeError naming what to choose instead)."""
        check_bits(self.bits)
        if self.quantize_embedding:
            try:
                check_bits(self.embedding_bits)
            except RecipeError as exc:
                raise RecipeError(f"embedding_bits: {exc}") from None
        check_group_setting(self.group_size)
        check_targets(self.targets, self.ignore)

    def check_model(self, model: nn.Module) -> None:
        """RecipeError unless the group size divides every targeted layer's width (runs on the skeleton too)."""
        check_widths(model, self.targets, self.ignore, self.group_size)
        if self.quantize_embedding:
            check_embedding(model, self.group_size)


def embedding_step(model: nn.Module, config: WeightQuantConfig, step_index: int | None):
    """Quantize the embedding (and a tied head) at ``embedding_bits`` when the config asks: (metrics, notes);
    a generator."""
    if not config.quantize_embedding:
        return {"embedding_quantized": 0.0}, ["The token embedding was left in full precision "
                                              "(quantize_embedding is off)."]
    check_embedding(model, config.group_size)
    metrics, note = yield from quantize_embedding(model, config.embedding_bits, config.group_size, config.symmetric, config.clip,
                                                  step_index)
    return metrics, [note]


def check_widths(model: nn.Module, targets: list, ignore: list, group_size: int) -> list[tuple[str, nn.Linear]]:
    """The target Linears, after checking up front that the group size divides every input width."""
    chosen = select_linears(model, targets, ignore)
    widths = [linear.in_features for _, linear in chosen]
    for name, linear in chosen:
        check_group_size(linear.in_features, group_size, name, widths)
    return chosen


def size_metrics(rows: list[dict]) -> dict:
    """Totals over the quantized layers: weights and the storage bits per weight they really take."""
    params = sum(r["params"] for r in rows)
    bits = sum(r["bits"] * r["params"] for r in rows) / params if params else 0.0
    return {"layers": len(rows), "quantized_params": params, "bits_per_weight": bits}


QUANT_NOTES = [
    "Weights are stored as packed integer codes plus per-group scales in the compressed-tensors "
    "'pack-quantized' layout (what transformers and vLLM read); bits_per_weight counts the scales "
    "and zero points too.",
    "On a CPU, 4-bit layers with groups of 32 to 256 run PyTorch's int4 kernel and decode faster than float; "
    "other widths are unpacked at every matrix product: smaller files and memory, but slower than float "
    "(vLLM and similar servers have kernels for them).",
]
