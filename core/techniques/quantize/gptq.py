"""GPTQ: weight quantization with error compensation (Frantar et al., 2022).

For each Linear, with the layer-wise Hessian H = (2/n) Σ x xᵀ of its calibration inputs, the
columns are quantized one at a time.  Each column's rounding error, divided by the pivot of the
upper Cholesky factor U of H⁻¹, is spread over the not-yet-quantized columns through U's row, so
the layer's output ``W X`` moves as little as possible (the Optimal Brain Surgeon update).  The
updates are applied inside blocks of ``block_size`` columns at once and to later columns lazily,
one matrix product per block.  Details of this implementation (:func:`gptq_quantize_weight`):

- dead inputs (H_jj = 0: always zero) get H_jj = 1 and weight 0;
- dampening adds ``percdamp · mean(diag H)`` to the diagonal (×10 retries if Cholesky fails);
- groups without act-order: a group's scale/zero are computed from the *already updated* weights
  when the group starts, as in the reference; the block is widened to a multiple of the group, so
  a group never straddles two blocks;
- ``static_groups``: every group's scale/zero from the original weights before any update (the
  reference's ``--static-groups``, and what llm-compressor always does); act-order implies it;
- act-order: columns are processed by decreasing H_jj (the most active inputs first) and the
  codes un-permuted at the end.  With groups we use the reference's *static groups*: every group's
  scale/zero come from the original weights of contiguous columns before any update, so groups
  stay contiguous in the saved file and no ``g_idx`` is needed (readers need no reordering);
- per-channel (group_size 0): one scale per row from the original weights, as in the reference;
- ``clip="mse"``: each group's range is fitted by the clip search of :func:`grid.mse_group_params`
  (the reference's optional ``mse`` grid search) wherever min-max parameters would be computed.
- ``grid="q4_0" / "q8_0"``: llama.cpp's blocks of 32 (:mod:`gguf_grid`): each block's scale by
  llama.cpp's imatrix search (``make_qx_quants``) weighted by the Hessian's diagonal, on the updated
  weights when GPTQ reaches the block (on the original ones with static groups / act-order, whose blocks
  stay contiguous); the GGUF export writes the blocks from GPTQ's codes and scales, unchanged.

Checked against the reference: dampening 0.01 · mean(diag H), block size 128, act-order with
static groups, as there.  ``true_sequential`` is the reference's option of the same name: the
block is re-run after quantizing q/k/v so o_proj's Hessian sees their quantized outputs, and
likewise for the MLP (without it, all of a block's Hessians come from one pass before any layer
is quantized).  The paper calibrates on 128 windows of 2048 tokens; the app's recipes default to
fewer, shorter ones.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from core.engine.calibration import HessianStats, inverse_hessian_cholesky, run_blockwise
from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.errors import RecipeError
from core.events import LayerStat
from core.models.memory import release_file_pages
from core.models.module_swap import replace_module
from core.techniques.quantize.common import (
    QUANT_NOTES,
    WeightQuantConfig,
    check_widths,
    embedding_step,
    size_metrics,
)
from core.techniques.quantize.fake_quant import GGUF_GRIDS
from core.techniques.quantize.gguf_grid import CODE_LIMITS, block_scales
from core.techniques.quantize.grid import check_group_size, code_range, dequantize, fit_group_params
from core.techniques.quantize.packed_format import mark_quantized
from core.techniques.quantize.packed_linear import PackedLinear


@dataclass
class GPTQOptions(WeightQuantConfig):
    """GPTQ's settings on the app's int grid (what mixed precision shares with it)."""

    act_order: bool = param(False, "Quantize the most active inputs first (by calibration energy), so the "
                            "error lands on the least important ones. On the bundled model it took 4-bit g64 "
                            "from 25.6 to 23.5 perplexity (symmetric) at no extra cost; recommended.",
                            label="Most important inputs first (act-order)", expert=True)
    dampening: float = param(0.01, "A small amount added for numerical stability when GPTQ works out how "
                             "to correct each rounding: added to the diagonal of the Hessian (the matrix of how "
                             "the layer's inputs vary together), as a share of its mean (0.01 = 1%). The default "
                             "works; raise it only if a run stops because a layer fails to factorise.",
                             minimum=0.0, maximum=1.0, exclusive_minimum=True,
                             label="Stabilizer (dampening)", expert=True)
    block_size: int = param(128, "Columns whose error updates are applied together (lazy batch updates); "
                            "only speed changes, not the result's quality. 128 is the paper's value.",
                            minimum=8, maximum=4096, label="Columns per batch (block size)", expert=True)
    static_groups: bool = param(False, "Fit every group's range to the original weights before any column is "
                                "changed (as llm-compressor and GPTQ's --static-groups do), instead of to the "
                                "already-corrected weights when the group starts. Always on with act-order.",
                                label="Fix group ranges first (static groups)", expert=True)
    true_sequential: bool = param(False, "Inside each decoder block, quantize the layers in the order they run "
                                  "(attention inputs, attention output, MLP inputs, MLP output) and measure each "
                                  "group's inputs after the ones before it were quantized, so later layers make up "
                                  "for earlier errors. One extra pass through the block per group.",
                                  label="Layer after layer, in running order", expert=True)


GRID_HELP = ("int: the app's packed grid (bits and group size as set; saved for transformers and vLLM). q4_0 / "
             "q8_0: llama.cpp's blocks of 32, scales searched as llama.cpp's imatrix quantizer does, so the result exports to GGUF Q4_0 / Q8_0 "
             "holding exactly GPTQ's corrected codes, with no second rounding (set bits 4 or 8, group size 32, "
             "symmetric; the token embedding is left to the GGUF export).")


@dataclass
class GPTQConfig(GPTQOptions):
    grid: str = param("int", GRID_HELP, choices=("int", *GGUF_GRIDS), label="Grid")

    def validate(self) -> None:
        GPTQOptions.validate(self)
        if self.grid not in GGUF_GRIDS:
            return
        bits, block = GGUF_GRIDS[self.grid]
        if (self.bits, self.group_size, self.symmetric) != (bits, block, True):
            raise RecipeError(f"grid {self.grid} stores {bits} bits in symmetric blocks of {block}: set bits {bits}, "
                              f"group_size {block} and symmetric true (got bits {self.bits}, group_size "
                              f"{self.group_size}, symmetric {self.symmetric})")
        if self.clip != "none":
            raise RecipeError(f"grid {self.grid} searches each block's scale itself (llama.cpp's imatrix search): set clip none "
                              f"(got clip {self.clip})")


@contextmanager
def _one_thread():
    """Run the column loop on one intra-op thread.

    The loop is thousands of small tensor operations; on a busy CPU, waking a second thread for each
    costs far more than it saves (measured here: 0.1 s with one thread vs 12 s with two for a
    576×576 layer under load).  ``torch.set_num_threads`` is process-wide, so it is restored after.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)



def gptq_quantize_weight(weight: torch.Tensor, hessian: torch.Tensor, bits: int = 4, group_size: int = 128,
                         symmetric: bool = True, act_order: bool = False, percdamp: float = 0.01,
                         block_size: int = 128, scale_dtype: torch.dtype | None = None, clip: str = "none",
                         static_groups: bool = False, grid: str = "int"):
    """Quantize ``weight`` [out, in] with GPTQ; return (codes, scales, zeros, perm, error).

    ``codes`` int8 [out, in] in the original column order; ``scales`` float32 [out, groups]
    (rounded to ``scale_dtype`` if given, so they are exact when stored); ``zeros`` int8 or None
    (symmetric); ``perm`` the processing order (None without act-order); ``clip`` how each group's
    range is fitted ("none": min-max, "mse": shrunk to the smallest rounding error); ``error`` is
    ‖(W − Ŵ) X‖² / tokens = ½ tr(ΔW H ΔWᵀ) summed over outputs, with the undamped Hessian.
    ``static_groups`` fits every group to the original weights up front (implied by act-order).
    ``grid`` "q4_0" / "q8_0": llama.cpp's blocks of 32 instead (``bits``, ``group_size``, ``symmetric``,
    ``scale_dtype`` and ``clip`` are then the grid's; see :mod:`gguf_grid`): each block's scale by llama.cpp's
    imatrix search weighted by the Hessian's diagonal; GGUF export writes the codes and scales unchanged.
    """
    with _one_thread():
        return _gptq(weight, hessian, bits, group_size, symmetric, act_order, percdamp, block_size, scale_dtype,
                     clip, static_groups, grid)


def _gptq(weight, hessian, bits, group_size, symmetric, act_order, percdamp, block_size, scale_dtype, clip,
          static_groups, grid="int"):
    gguf = grid != "int"
    if gguf:  # llama.cpp's blocks: symmetric, 32 columns, its own code range
        bits, group_size = GGUF_GRIDS[grid]
        symmetric = True
    rows, columns = weight.shape
    check_group_size(columns, group_size)
    size = group_size or columns
    low, high = CODE_LIMITS[grid] if gguf else code_range(bits)
    original = weight.detach().to(torch.float32)
    W = original.clone()
    H = hessian.detach().to(device=W.device, dtype=torch.float32).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    scales = torch.ones(rows, columns // size, device=W.device)
    zeros = None if symmetric else torch.zeros(rows, columns // size, dtype=torch.int8, device=W.device)
    static = act_order or static_groups or not group_size
    importance = torch.diag(H)  # GGUF grids: each block's scale search weighs its inputs by H_jj (the imatrix)
    if static and gguf:
        scales = block_scales(W, grid, importance)
    elif static:  # all groups' parameters from the original weights (static groups / per-channel)
        scales, zeros = fit_group_params(W, bits, group_size, symmetric, scale_dtype, clip)
    perm = None
    order = torch.arange(columns, device=W.device)
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H, order = W[:, perm], H[perm][:, perm], perm
    group_of = (order // size).tolist()  # the group of each column, in processing order
    Hinv = inverse_hessian_cholesky(H, percdamp, "GPTQ")

    step = block_size if static else -(-block_size // size) * size
    # Work on Wᵀ [columns, rows] so each column is one contiguous row of memory.
    Wt = W.T.contiguous()
    Qt = torch.zeros(columns, rows, dtype=torch.int8, device=W.device)
    scale_t = scales.T.contiguous()  # [groups, rows]
    zero_t = zeros.T.to(torch.float32).contiguous() if zeros is not None else None
    for i1 in range(0, columns, step):
        i2 = min(i1 + step, columns)
        W1 = Wt[i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            if not static and gguf and j % size == 0:  # a new block starts: its d searched on the updated weights
                scale_t[j // size] = block_scales(W1[i:i + size].T, grid, importance[j:j + size])[:, 0]
            elif not static and j % size == 0:  # a new group starts: fit it to the updated weights
                s, z = fit_group_params(W1[i:i + size].T, bits, 0, symmetric, scale_dtype, clip)
                scale_t[j // size] = s[:, 0]
                if zero_t is not None:
                    zero_t[j // size] = z[:, 0].to(torch.float32)
            g = group_of[j]
            s = scale_t[g]
            z = zero_t[g] if zero_t is not None else 0.0
            w = W1[i]
            if gguf:  # d = 0 only for an all-zero block: its codes are 0, as llama.cpp writes them
                q = torch.clamp_(torch.round_(torch.where(s == 0, 0.0, w / s)), low, high)
            else:
                q = torch.clamp_(torch.round_(w / s + z), low, high)
            err = (w - (q - z) * s) / Hinv1[i, i]
            # OBS update: compensate this column's error on the rest of the block.
            W1[i + 1:].addr_(Hinv1[i, i + 1:], err, alpha=-1)
            Err1[i] = err
            Qt[j] = q.to(torch.int8)
        Wt[i2:] -= Hinv[i1:i2, i2:].T @ Err1  # lazy batch update of the columns after the block
    Q = Qt.T.contiguous()
    scales = scale_t.T.contiguous()
    zeros = zero_t.T.to(torch.int8).contiguous() if zero_t is not None else None

    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    delta = original - dequantize(Q, scales, zeros).to(torch.float32)
    error = 0.5 * float(((delta @ hessian.to(device=W.device, dtype=torch.float32)) * delta).sum())
    return Q, scales, zeros, perm, error


def gptq_quantize_model(model, windows: torch.Tensor, bits_of: Callable[[str], int], config: GPTQConfig,
                        device, step_index: int | None = None):
    """GPTQ every target Linear at ``bits_of(name)`` bits, block by block on the calibration windows.

    A generator yielding the engine's and per-layer events; returns the per-layer report rows.
    """
    rows: list[dict] = []
    pending: list[tuple[str, PackedLinear]] = []

    def swap_in_packed():
        for name, packed in pending:
            replace_module(model, name, packed)
        pending.clear()

    def compress(block):
        swap_in_packed()  # the previous block's (or stage's) outputs have been computed by now
        for name, linear in block.linears.items():
            bits = bits_of(name)
            with torch.no_grad():
                codes, scales, zeros, _perm, error = gptq_quantize_weight(
                    linear.weight, block.stats[name].hessian, bits, config.group_size, config.symmetric,
                    config.act_order, config.dampening, config.block_size, scale_dtype=linear.weight.dtype,
                    clip=config.clip, static_groups=config.static_groups, grid=getattr(config, "grid", "int"))
                packed = PackedLinear.from_linear(linear, codes, scales, zeros, bits, config.group_size,
                                                  config.symmetric)
            # Until the engine has run the windows through this block, the Linear holds the exact
            # dequantized weights the packed layer computes: one dense weight instead of unpacking
            # the codes again for every window.  The packed layer replaces it afterwards.
            original = linear.weight
            linear.weight = torch.nn.Parameter(packed.dequantized_weight().to(linear.weight.dtype),
                                               requires_grad=False)
            release_file_pages([original], model)
            del original
            pending.append((name, packed))
            info = packed.compression_info()
            rows.append({"layer": name, "params": info["params"], "bits": info["bits"], "quant_bits": bits,
                         "reconstruction_error": error})
            yield LayerStat(name, "reconstruction_error", error, step_index)
            yield LayerStat(name, "bits", info["bits"], step_index)

    try:
        yield from run_blockwise(model, windows, make_stats=HessianStats, compress_block=compress,
                                 targets=config.targets, ignore=config.ignore, device=device,
                                 stage="GPTQ quantization", step_index=step_index,
                                 sequential=config.true_sequential)
    finally:
        swap_in_packed()
    return rows


GPTQ_NOTE = ("reconstruction_error is each layer's mean squared output change per calibration token "
             "(‖(W − Ŵ)X‖² / tokens), measured after quantization.")


@register("gptq_quantize", title="GPTQ quantization", family="quantization",
          summary="Store weights in 2–8 bits, rounding each column so the error is made up for by the "
                  "columns still to come, using second-order statistics of calibration text. Much better "
                  "than plain rounding at 3 bits; at 4 bits switch on act_order, asymmetric and clip=mse (on the "
                  "bundled model that beat plain rounding and every 4-bit peer measured). The saved folder is "
                  "really smaller.",
          config=GPTQConfig, needs=Needs(calibration_data=True))
def apply_gptq_quantize(model, config: GPTQConfig, ctx):
    """Handler: check widths, Hessians block by block, GPTQ each target Linear into a PackedLinear."""
    check_widths(model, config.targets, config.ignore, config.group_size)  # before any calibration work
    windows = ctx.calibration_windows()
    if config.grid in GGUF_GRIDS:  # llama.cpp quantizes the token embedding itself when it writes the file
        embedding, embedding_notes = {"embedding_quantized": 0.0}, [
            f"The token embedding stays in float: the GGUF export quantizes it to {config.grid.upper()} itself."]
    else:  # the embedding first, so the Hessians are gathered on the inputs the quantized model will see
        embedding, embedding_notes = yield from embedding_step(model, config, ctx.step_index)
    rows = yield from gptq_quantize_model(model, windows, lambda _name: config.bits, config, ctx.device,
                                          ctx.step_index)
    mark_quantized(model)
    metrics = {**size_metrics(rows), **embedding, "reconstruction_error": sum(r["reconstruction_error"] for r in rows),
               "calibration_tokens": int(windows.numel())}
    group = config.group_size or "per-channel"
    clipped = ", MSE-clipped ranges" if config.clip == "mse" else ""
    if config.grid in GGUF_GRIDS:
        clipped = f", on llama.cpp's {config.grid.upper()} blocks: exports to GGUF {config.grid.upper()} unchanged"
    return StepReport(
        summary=f"Quantized {len(rows)} layers to {config.bits} bits (group {group}{clipped}) with GPTQ: "
                f"{metrics['bits_per_weight']:.2f} bits per weight stored.",
        metrics=metrics, layers=rows, notes=QUANT_NOTES + embedding_notes + [GPTQ_NOTE])
