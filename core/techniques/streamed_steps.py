"""The block-wise techniques' bodies for a streamed model (:mod:`core.engine.streamed`).

Each is the in-memory handler's math and loop (``prune_wanda_blocks``, the handler's own pass,
``gptq_quantize_weight`` through ``run_blockwise``) without what needs the whole model at once
(counting every weight's bytes, swapping packed modules into the model, the embedding step): the
calibration engine reads and writes each block, so the result is the in-memory one, block by block.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import torch

from core.engine.calibration import HessianStats, run_blockwise
from core.engine.registry import StepReport
from core.engine.streamed import StreamContext, register_streamed
from core.events import LayerStat
from core.models.formats import model_format, write_manifest
from core.techniques.prune.wanda import prune_wanda_blocks
from core.techniques.quantize.common import QUANT_NOTES, check_widths, size_metrics
from core.techniques.quantize.gptq import gptq_quantize_weight
from core.techniques.quantize.packed_format import mark_quantized, quantization_config
from core.techniques.quantize.packed_linear import PackedLinear


@register_streamed("wanda_prune")
def stream_wanda(model, config, ctx: StreamContext) -> Generator[Any, None, StepReport]:
    """Wanda on a streamed model: the handler's own pass over the blocks (``prune_wanda_blocks``)."""
    rows, achieved, _schedule = yield from prune_wanda_blocks(model, ctx, config)
    return StepReport(summary=f"Pruned {len(rows)} layers to {achieved:.1%} zeros with Wanda, streamed block by block.",
                      metrics={"sparsity": achieved, "layers": len(rows)}, layers=rows,
                      notes=["Saved dense: zeros take as much disk as any other value."])


@register_streamed("gptq_quantize")
def stream_gptq(model, config, ctx: StreamContext) -> Generator[Any, None, StepReport]:
    """GPTQ on a streamed model (``gptq_quantize_weight`` per Linear), saved packed as the in-memory run saves it.

    While the block's outputs are computed its Linears hold the dequantized values (as in memory); the packed
    layer is what the block's shard holds, and what the skeleton keeps (on meta) for the passes after it.
    """
    rows: list[dict] = []
    check_widths(model, config.targets, config.ignore, config.group_size)  # on the skeleton, before any work

    def compress(block):
        for name, linear in block.linears.items():
            with torch.no_grad():
                codes, scales, zeros, _perm, error = gptq_quantize_weight(
                    linear.weight, block.stats[name].hessian, config.bits, config.group_size, config.symmetric,
                    config.act_order, config.dampening, config.block_size, scale_dtype=linear.weight.dtype,
                    clip=config.clip, static_groups=config.static_groups)
                packed = PackedLinear.from_linear(linear, codes, scales, zeros, config.bits, config.group_size,
                                                  config.symmetric)
                linear.weight = torch.nn.Parameter(packed.dequantized_weight().to(linear.weight.dtype),
                                                   requires_grad=False)
            ctx.replacements[name] = packed
            info = packed.compression_info()
            rows.append({"layer": name, "params": info["params"], "bits": info["bits"], "quant_bits": config.bits,
                         "reconstruction_error": error})
            yield LayerStat(name, "reconstruction_error", error, ctx.step_index)
            yield LayerStat(name, "bits", info["bits"], ctx.step_index)

    yield from run_blockwise(model, ctx.calibration_windows(), make_stats=HessianStats, compress_block=compress,
                             targets=config.targets, ignore=config.ignore, device=ctx.device,
                             stage="GPTQ quantization", step_index=ctx.step_index,
                             sequential=config.true_sequential)
    ctx.finishers.append(_describe_packed)
    metrics = {**size_metrics(rows), "reconstruction_error": sum(r["reconstruction_error"] for r in rows)}
    return StepReport(
        summary=f"Quantized {len(rows)} layers to {config.bits} bits with GPTQ, streamed block by block: "
                f"{metrics['bits_per_weight']:.2f} bits per weight stored.",
        metrics=metrics, layers=rows, notes=QUANT_NOTES[:1])


def _describe_packed(model, folder: Path) -> None:
    """The packed folder's config (compressed-tensors quantization_config) and manifest, from the skeleton."""
    mark_quantized(model)
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["quantization_config"] = quantization_config(model)
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    write_manifest(folder, model_format(model))
