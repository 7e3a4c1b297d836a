"""What each technique does to the model's size, and what it costs in time and memory, for the estimate.

One rule per registered technique name, read from the technique's real behaviour (core/techniques/**):

* quantization keeps every parameter and changes the *stored bits* of the Linears it targets (the
  output head and classifier heads are ignored by default) and, with ``quantize_embedding`` (on by
  default), of the token embedding (a tied head shares it).  RTN, GPTQ and mixed precision store ``PackedLinear`` codes + scales
  in the model's compute dtype (+ zero points when asymmetric), exactly as
  :func:`core.techniques.quantize.packed_linear.packed_storage_bytes` counts them;
* pruning to zeros (magnitude, Wanda, SparseGPT) keeps every parameter and lowers the non-zero count;
  the saved file shrinks only with ``save_format: sparse`` (bitmask + kept values);
* structured pruning, layer drop, low-rank factorization and layer sharing remove parameters.

Times are built from a few measured quantities (:class:`Machine`): the seconds a forward pass takes per
token (the probe of :mod:`core.engine.throughput`, or arithmetic), the matrix-product rate that implies,
and ``scale``, how much slower or faster this machine is than the one the per-weight constants below were
measured on (bench/bench_estimates.py checks them against real runs).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

# Seconds per million targeted weights on the reference machine (bench/bench_estimates.py), × Machine.scale.
MAGNITUDE_S_PER_M = 0.04
RTN_S_PER_M = 0.035
MSE_CLIP_S_PER_M = 0.12  # the clip search tries 100 shrink factors per group (RTN; GPTQ act-order: a tenth)
WANDA_S_PER_M = 0.12
GPTQ_S_PER_COLUMN = 1.0e-4  # per input column: the loop's small tensor operations (on one thread), packing
SPARSEGPT_S_PER_COLUMN = 3.5e-4  # SparseGPT's loop updates a whole block row per column, on every thread
SVD_S_PER_M = 0.5


@dataclass
class Layer:
    """One module that owns weights, as the estimate tracks it through the steps."""

    name: str
    kind: str  # "Linear", "Embedding", a norm's class name…
    out_features: int
    in_features: int
    params: int
    nonzero: int
    stored_bits: float  # bits per parameter in the saved file (the ordinary float format until a step packs it)
    forward_cost: float = 1.0  # relative cost of this layer's matrix product after the step (1 = float)


@dataclass
class Machine:
    """How fast things run here: forward seconds per token, matrix FLOP/s, and ``scale`` vs the reference."""

    device: str
    seconds_per_token: float
    flops: float
    scale: float


@dataclass
class Context:
    """What a rule may read: the model's shape, the recipe's data settings, the machine."""

    hidden: int
    num_layers: int
    vocab: int
    sequence_length: int
    calibration_windows: int
    compute_bytes: int  # bytes per value of the model's compute dtype (packed scales are stored in it)
    machine: Machine

    @property
    def calibration_tokens(self) -> int:
        return self.sequence_length * self.calibration_windows


@dataclass
class StepCost:
    """What one step costs and what it leaves: seconds, extra working memory, the stored format, notes."""

    seconds: float
    working_bytes: int = 0
    stored_format: str | None = None  # e.g. "4-bit packed (GPTQ)"; None: the ordinary float format
    notes: list[str] = field(default_factory=list)
    guess: bool = False


Rule = Callable[[list[Layer], Any, Context], StepCost]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    def decorate(function: Rule) -> Rule:
        for name in names:
            RULES[name] = function
        return function

    return decorate


# -- shared pieces -------------------------------------------------------------------------------------
DEFAULT_IGNORE = ["lm_head", "*classifier*", "score", "*pooler*"]  # as core.engine.targets


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name.rsplit(".", 1)[-1], pattern)


def targeted(layers: list[Layer], config: Any, default_ignore: list[str] | None = None) -> list[Layer]:
    """The Linears a step with ``targets``/``ignore`` patterns touches (core.engine.targets.select_linears)."""
    targets = getattr(config, "targets", None) or ["*"]
    ignore = getattr(config, "ignore", None)
    ignore = (default_ignore or DEFAULT_IGNORE) if ignore is None else ignore
    return [layer for layer in layers if layer.kind == "Linear"
            and any(_matches(layer.name, p) for p in targets) and not any(_matches(layer.name, p) for p in ignore)]


def forward_seconds(tokens: float, ctx: Context, passes: float = 1.0) -> float:
    return passes * tokens * ctx.machine.seconds_per_token


def hessian_seconds(layers: list[Layer], tokens: float, ctx: Context) -> float:
    """Accumulating XᵀX for every layer: tokens × in² multiply-adds each (the inputs shared by q/k/v count once)."""
    widths: dict[tuple[str, int], int] = {}
    for layer in layers:
        block = layer.name.rsplit(".", 2)[0]
        widths[(block, layer.in_features)] = layer.in_features
    return sum(2 * tokens * w * w for w in widths.values()) / ctx.machine.flops


def packed_bits(layer: Layer, bits: int, group_size: int, symmetric: bool, scale_bytes: int) -> float:
    """Stored bits per weight of a PackedLinear (codes, scales, zero points, shape; as packed_storage_bytes)."""
    out, width = layer.out_features, layer.in_features
    groups = width // group_size if group_size and width % group_size == 0 else 1
    total = out * -(-width * bits // 32) * 4 + out * groups * scale_bytes + 2 * 8
    if not symmetric:
        total += -(-out * bits // 32) * groups * 4
    return total * 8 / max(1, layer.params)


def packed_forward_cost(bits: int, group_size: int, device: str) -> float:
    """A packed layer's matrix product against a float one: CPU int4 kernel, or unpacking at every call."""
    if device != "cpu":
        return 1.5  # not measured: a guess
    return 0.8 if bits == 4 and group_size in (32, 64, 128, 256) else 1.1  # measured by bench/bench_estimates.py


def _prune_density(config: Any) -> float:
    pattern = getattr(config, "pattern", "unstructured")
    if pattern in ("2:4", "4:8"):
        return 0.5
    return 1.0 - float(getattr(config, "sparsity", 0.5))


def _zero_out(layers: list[Layer], config: Any) -> tuple[StepCost, list[Layer]]:
    chosen = targeted(layers, config)
    density = _prune_density(config)
    sparse = getattr(config, "save_format", "dense") == "sparse"
    for layer in chosen:
        layer.nonzero = min(layer.nonzero, int(layer.params * density))
        if sparse:  # bitmask (1 bit per weight) + the kept values
            layer.stored_bits = 1.0 + layer.stored_bits * density
    notes = [] if sparse else ["Pruning to zeros keeps every parameter and does not shrink the saved file: zeros "
                               "in a dense tensor take as many bytes as any other number (choose save_format: sparse for a "
                               "smaller file)."]
    return StepCost(0.0, stored_format="sparse bitmask" if sparse else None, notes=notes), chosen


def _weight_megas(layers: list[Layer]) -> float:
    return sum(layer.params for layer in layers) / 1e6


# -- quantization --------------------------------------------------------------------------------------
def _quantize_packed(layers: list[Layer], config: Any, ctx: Context, bits_of: Callable[[Layer], int],
                     name: str) -> list[Layer]:
    chosen = targeted(layers, config)
    group, symmetric = int(getattr(config, "group_size", 64)), bool(getattr(config, "symmetric", True))
    for layer in chosen:
        bits = bits_of(layer)
        layer.stored_bits = packed_bits(layer, bits, group, symmetric, ctx.compute_bytes)
        layer.forward_cost = packed_forward_cost(bits, group, ctx.machine.device)
    embedding = next((layer for layer in layers if layer.kind == "Embedding"), None)
    if getattr(config, "quantize_embedding", False) and embedding is not None:  # the token table, packed too
        embedding.stored_bits = packed_bits(embedding, int(getattr(config, "embedding_bits", 8)), group, symmetric,
                                            ctx.compute_bytes)
    return chosen


def _packed_label(bits: str, name: str) -> str:
    return f"{bits}-bit packed ({name})"


@rule("rtn_quantize")
def rtn(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    chosen = _quantize_packed(layers, config, ctx, lambda _layer: int(config.bits), "RTN")
    per_m = RTN_S_PER_M + (MSE_CLIP_S_PER_M if getattr(config, "clip", "none") == "mse" else 0.0)
    return StepCost(per_m * _weight_megas(chosen) * ctx.machine.scale, stored_format=_packed_label(str(config.bits), "RTN"))


def _gptq_seconds(chosen: list[Layer], config: Any, ctx: Context, per_column: float = GPTQ_S_PER_COLUMN) -> float:
    tokens = ctx.calibration_tokens
    passes = 2.0 if getattr(config, "true_sequential", False) else 1.0
    columns = sum(layer.in_features for layer in chosen)
    mse = MSE_CLIP_S_PER_M * _weight_megas(chosen) if getattr(config, "clip", "none") == "mse" else 0.0
    if getattr(config, "act_order", False):
        mse /= 10  # with static groups the clip search runs once per layer, on the original weights
    return (forward_seconds(tokens, ctx, passes) + hessian_seconds(chosen, tokens, ctx)
            + (columns * per_column + mse) * ctx.machine.scale)


def _block_working_bytes(chosen: list[Layer], ctx: Context) -> int:
    """A block's Hessians (a float64 in×in sum per distinct input, and one float32 H read at a time) + the
    calibration activations in and out."""
    largest = max((layer.in_features ** 2 for layer in chosen), default=0)
    per_block = largest * 8 * 4 + largest * 4
    return per_block + ctx.calibration_tokens * ctx.hidden * 4 * 3


@rule("gptq_quantize")
def gptq(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    chosen = _quantize_packed(layers, config, ctx, lambda _layer: int(config.bits), "GPTQ")
    return StepCost(_gptq_seconds(chosen, config, ctx), _block_working_bytes(chosen, ctx),
                    _packed_label(str(config.bits), "GPTQ"))


@rule("mixed_precision_quantize")
def mixed(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    low, high = int(config.bits), int(getattr(config, "high_bits", 8))
    target = float(getattr(config, "target_bits", 5.0))
    share_high = min(1.0, max(0.0, (target - low - 0.56) / max(1, high - low)))  # the budget's share at high bits
    chosen = _quantize_packed(layers, config, ctx, lambda _layer: low, "mixed")
    for layer in chosen:  # the average the allocation aims at
        layer.stored_bits += share_high * (high - low)
    sensitivity = forward_seconds(ctx.sequence_length * getattr(config, "sensitivity_windows", 8), ctx, 3.0)
    seconds = sensitivity + (_gptq_seconds(chosen, config, ctx) if getattr(config, "method", "gptq") == "gptq"
                             else RTN_S_PER_M * _weight_megas(chosen) * ctx.machine.scale)
    return StepCost(seconds, _block_working_bytes(chosen, ctx), _packed_label(f"{low}–{high}", "mixed precision"))


@rule("bnb_quantize")
def bnb(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    mode = getattr(config, "mode", "nf4")
    bits = 8.05 if mode == "int8" else (4.13 if getattr(config, "double_quant", False) else 4.5)
    chosen = targeted(layers, config)
    for layer in chosen:
        layer.stored_bits, layer.forward_cost = bits, 2.0
    return StepCost(RTN_S_PER_M * _weight_megas(chosen) * ctx.machine.scale,
                    stored_format=f"bitsandbytes {mode}")


@rule("dynamic_int8")
def dynamic_int8(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    smoothing = float(getattr(config, "smoothing", 0.0)) > 0
    windows = min(ctx.calibration_windows, int(getattr(config, "smoothing_windows", 16))) if smoothing else 0
    chosen = targeted(layers, config, [*DEFAULT_IGNORE, "*down_proj"])
    seconds = forward_seconds(windows * ctx.sequence_length, ctx) + RTN_S_PER_M * _weight_megas(chosen) * ctx.machine.scale
    return StepCost(seconds, notes=["Dynamic int8 saves float weights holding the int8 values, so plain transformers "
                                    "loads the folder: the file is not smaller; the int8 layers are smaller in memory "
                                    "once loaded here."])


# -- pruning to zeros ----------------------------------------------------------------------------------
@rule("magnitude_prune")
def magnitude(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    cost, chosen = _zero_out(layers, config)
    cost.seconds = MAGNITUDE_S_PER_M * _weight_megas(chosen) * ctx.machine.scale
    return cost


@rule("wanda_prune")
def wanda(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    cost, chosen = _zero_out(layers, config)
    passes = 2.0 if getattr(config, "schedule", "uniform") == "owl" else 1.0  # OWL measures outliers first
    cost.seconds = forward_seconds(ctx.calibration_tokens, ctx, passes) + \
        WANDA_S_PER_M * _weight_megas(chosen) * ctx.machine.scale
    cost.working_bytes = ctx.calibration_tokens * ctx.hidden * 4 * 3
    return cost


@rule("sparsegpt_prune")
def sparsegpt(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    cost, chosen = _zero_out(layers, config)
    owl = forward_seconds(ctx.calibration_tokens, ctx) if getattr(config, "schedule", "uniform") == "owl" else 0.0
    cost.seconds = owl + _gptq_seconds(chosen, config, ctx, SPARSEGPT_S_PER_COLUMN)
    cost.working_bytes = _block_working_bytes(chosen, ctx)
    return cost


# -- removing parameters -------------------------------------------------------------------------------
def _shrink(layer: Layer, out_share: float = 1.0, in_share: float = 1.0) -> None:
    out = max(1, round(layer.out_features * out_share))
    width = max(1, round(layer.in_features * in_share))
    share = out * width / max(1, layer.out_features * layer.in_features)
    layer.out_features, layer.in_features = out, width
    layer.params = round(layer.params * share)
    layer.nonzero = round(layer.nonzero * share)


def _calibration_pass(ctx: Context, passes: float = 1.0) -> StepCost:
    return StepCost(forward_seconds(ctx.calibration_tokens, ctx, passes),
                    working_bytes=ctx.calibration_tokens * ctx.hidden * 4 * 3)


@rule("mlp_prune")
def mlp_prune(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    keep = 1.0 - float(getattr(config, "reduction", 0.25))
    for layer in layers:
        if layer.kind == "Linear" and ".mlp." in layer.name:
            if layer.name.endswith(("down_proj", "fc2", "dense_4h_to_h")):
                _shrink(layer, in_share=keep)
            else:
                _shrink(layer, out_share=keep)
    return _calibration_pass(ctx)


@rule("attention_prune")
def attention_prune(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    removed = int(getattr(config, "kv_heads_to_remove", 1))
    for layer in layers:
        if layer.kind != "Linear" or ".self_attn." not in layer.name:
            continue
        kv_heads = max(1, next((x.out_features for x in layers if x.name == layer.name.rsplit(".", 1)[0] + ".k_proj"),
                               64) // 64)  # head width 64 (a guess: the summary does not say)
        keep = max(0.0, 1 - removed / kv_heads)
        if layer.name.endswith("o_proj"):
            _shrink(layer, in_share=keep)
        else:
            _shrink(layer, out_share=keep)
    cost = _calibration_pass(ctx)
    cost.guess = True
    return cost


def _block_index(name: str) -> int | None:
    found = re.search(r"\.(?:layers|h|blocks|layer)\.(\d+)\.", name + ".")
    return int(found.group(1)) if found else None


@rule("layer_drop")
def layer_drop(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    count = int(getattr(config, "layers_to_drop", 1))
    blocks = sorted({i for i in (_block_index(layer.name) for layer in layers) if i is not None})
    dropped = set(blocks[-count - 1:-1]) if count and len(blocks) > count else set()  # which ones: decided by data
    layers[:] = [layer for layer in layers if _block_index(layer.name) not in dropped]
    ctx.num_layers = max(0, ctx.num_layers - count)
    return _calibration_pass(ctx)


@rule("svd_lowrank")
def svd_lowrank(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    chosen = targeted(layers, config)
    rank, reduction = getattr(config, "rank", None), float(getattr(config, "target_reduction", 0.2))
    merge = bool(getattr(config, "merge_to_dense", False))
    for layer in chosen:
        if merge:
            continue
        full = layer.out_features * layer.in_features
        factored = rank * (layer.out_features + layer.in_features) if rank else full * (1 - reduction)
        share = min(1.0, factored / max(1, full))
        layer.params, layer.nonzero = round(layer.params * share), round(layer.nonzero * share)
    aware = getattr(config, "method", "activation_aware") == "activation_aware"
    seconds = (forward_seconds(ctx.calibration_tokens, ctx) + hessian_seconds(chosen, ctx.calibration_tokens, ctx)
               if aware else 0.0) + SVD_S_PER_M * _weight_megas(chosen) * ctx.machine.scale
    return StepCost(seconds, _block_working_bytes(chosen, ctx) if aware else 0,
                    None if merge else "low-rank factors")


@rule("share_layers")
def share_layers(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    count = int(getattr(config, "num_shared", 2)) or len(getattr(config, "pairs", []) or [])
    blocks = sorted({i for i in (_block_index(layer.name) for layer in layers) if i is not None})
    followers = set(blocks[1:1 + 2 * count:2])
    rank = int(getattr(config, "correction_rank", 0))
    for layer in layers:
        if layer.kind == "Linear" and _block_index(layer.name) in followers:
            kept = rank * (layer.out_features + layer.in_features)
            layer.params, layer.nonzero = kept, kept
    windows = int(getattr(config, "score_windows", 8))
    return StepCost(forward_seconds(windows * ctx.sequence_length, ctx, 2.0 * max(1, len(blocks))),
                    working_bytes=ctx.calibration_tokens * ctx.hidden * 4 * 3, guess=True)


# -- training --------------------------------------------------------------------------------------------
@rule("distill_causal_lm")
def distill_causal(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    length = int(getattr(config, "sequence_length", 0)) or ctx.sequence_length
    windows = int(getattr(config, "train_windows", 256))
    epochs = float(getattr(config, "epochs", 1.0)) or 1.0
    steps = int(getattr(config, "max_steps", 0))
    tokens = (steps * int(getattr(config, "batch_size", 8)) * length) if steps else windows * length * epochs
    # teacher forward + student forward and backward (about 3 forwards), in float32 with Adam's two moments
    params = sum(layer.params for layer in layers)
    return StepCost(forward_seconds(tokens, ctx, 4.0), working_bytes=params * 4 * 3, guess=True)


@rule("qat")
def qat(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    """Quantization-aware training: the distillation job's passes (teacher forward, student forward and backward,
    the whole depth) plus re-rounding every targeted weight at each forward pass; the result is packed."""
    training = distill_causal(layers, config, ctx)
    grid = str(getattr(config, "grid", "int"))
    bits = {"q4_0": 4, "q8_0": 8}.get(grid, int(getattr(config, "bits", 4)))
    if grid != "int":  # llama.cpp's blocks of 32, symmetric; the GGUF export quantizes the embedding itself
        config = SimpleNamespace(**{**vars(config), "group_size": 32, "symmetric": True, "quantize_embedding": False})
    chosen = _quantize_packed(layers, config, ctx, lambda _layer: bits, "QAT")
    batches = float(getattr(config, "train_windows", 256)) * (float(getattr(config, "epochs", 1.0)) or 1.0) \
        / max(1, int(getattr(config, "batch_size", 8)))
    steps = int(getattr(config, "max_steps", 0)) or max(1, round(batches))
    rounding = steps * int(getattr(config, "grad_accumulation", 1)) * RTN_S_PER_M * _weight_megas(chosen) * ctx.machine.scale
    trained = sum(layer.params for layer in chosen)
    return StepCost(training.seconds + rounding, working_bytes=trained * 4 * 5,
                    stored_format=_packed_label(grid.upper() if grid != "int" else str(bits), "QAT"),
                    notes=["Quantization-aware training is a training run: its time grows with the steps and "
                           "tokens you set (the estimate counts about four passes of the model per token)."], guess=True)


@rule("train_classifier", "distill_classifier")
def classifier(layers: list[Layer], config: Any, ctx: Context) -> StepCost:
    length = int(getattr(config, "max_length", 64))
    epochs = float(getattr(config, "epochs", 1.0)) or 1.0
    tokens = 10_000 * length * epochs  # a few thousand labelled texts: the data's size is not known here
    params = sum(layer.params for layer in layers)
    return StepCost(forward_seconds(tokens, ctx, 4.0), working_bytes=params * 4 * 3, guess=True)


def unknown(_layers: list[Layer], _config: Any, ctx: Context) -> StepCost:
    cost = _calibration_pass(ctx)
    cost.guess = True
    return cost


def rule_for(technique: str) -> Rule:
    return RULES.get(technique, unknown)
