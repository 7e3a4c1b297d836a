"""GGUF K-quants and i-quants made by llama.cpp's own quantizer (``llama-quantize``).

The ``gguf`` Python package cannot write K-quants, so the blocks come from llama.cpp itself: our exporter
(:func:`core.io.gguf_export.export_gguf`) writes the model as an F16 GGUF to a hidden temporary file next to
the destination, ``llama-quantize`` turns it into the chosen type (with an importance matrix when given),
and the result is renamed into place only when complete; a failure or a cancel (closing the generator
kills the tool) leaves neither file behind.

llama.cpp's rules apply: a weight whose row length is not a multiple of the 256-value K-quant super-block
(e.g. SmolLM2-135M's 576-wide projections) gets llama.cpp's fallback type for that tensor (Q4_K -> Q5_0,
IQ4_XS -> IQ4_NL, ...), and the mixes (``_M`` / ``_S``) keep some tensors (attn_v, ffn_down, the output
head) at a higher type.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from core.errors import StudioError
from core.events import Progress
from core.io.atomic import atomic_file
from core.io.gguf_export import LAYER_TENSORS, export_gguf
from core.io.gguf_types import needs_quantizer
from core.io.llama_cpp_tools import run_tool
from core.partials import journaled


def gguf_tensor_name(state_name: str) -> str:
    """llama.cpp's name of a decoder weight (``model.layers.3.mlp.up_proj.weight`` -> ``blk.3.ffn_up.weight``),
    as our GGUF export names it."""
    parts = state_name.split(".")
    if state_name.startswith("model.layers.") and ".".join(parts[3:5]) in LAYER_TENSORS:
        return f"blk.{parts[2]}.{LAYER_TENSORS['.'.join(parts[3:5])]}.weight"
    return "output.weight" if state_name == "lm_head.weight" else state_name


def iter_quantize_file(source: Path, path: Path, quant: str, *, imatrix: str | Path | None = None,
                       keep_embedding: bool = False, threads: int | None = None,
                       extra_args: list[str] | None = None) -> Generator[Any, None, float]:
    """Run llama-quantize on the F16/F32 GGUF ``source`` into ``path`` (the caller renames it into place);
    ``extra_args``: more of its options (e.g. ``--override-kv``).
    Yields progress (cancel points: closing kills the tool); returns the quantizer's seconds."""
    threads = threads or max(1, min(4, os.cpu_count() or 1))
    args = ["--imatrix", str(imatrix)] if imatrix is not None else []
    args += extra_args or []
    if keep_embedding:
        args += ["--token-embedding-type", "f16"]
    started = time.perf_counter()
    job = run_tool("llama-quantize", [*args, str(source), str(path), quant, str(threads)],
                   doing=f"quantizing to {quant}")
    try:  # the tool's waits (None) become progress events: cancel points the app and CLI understand
        for event in job:
            yield event or Progress("writing GGUF", 1, 2)
    finally:
        job.close()  # a cancel kills the tool before its output is removed
    return time.perf_counter() - started


def iter_quantized_gguf(model: Any, tokenizer: Any, path: str | Path, quant: str, *, pre: str = "gpt-2",
                        name: str | None = None, imatrix: str | Path | None = None, keep_embedding: bool = False,
                        threads: int | None = None) -> Generator[Any, None, dict[str, Any]]:
    """Write ``model`` as a GGUF of type ``quant`` made by llama-quantize (``imatrix``: an importance-matrix GGUF
    it weighs rounding errors by; ``keep_embedding``: the token embedding stays F16).  Yields progress (cancel
    points); returns path, bytes, quant and the quantizer's seconds."""
    if not needs_quantizer(quant, with_imatrix=imatrix is not None):
        raise StudioError(f"{quant} is written by our exporter itself (core.io.gguf_export), not llama-quantize")
    path = Path(path)
    if path.suffix.lower() != ".gguf":
        raise StudioError(f"{path.name}: a GGUF file name must end in .gguf")
    if imatrix is not None and not Path(imatrix).is_file():
        raise StudioError(f"the importance matrix {imatrix} does not exist")
    if any(hasattr(module, "dequantized_weight") for module in model.modules()):
        raise StudioError(f"this model's layers are already quantized; {quant} would round them a second time: "
                          "export a float (or pruned) result, or Q4_0 / Q8_0 on the grid it was trained on")
    yield Progress("writing GGUF", 0, 2)
    # the F16 input keeps a .gguf ending (export_gguf wants one); both are journaled, so a killed process's
    # leftovers are swept at the next start
    with atomic_file(path, "writing the GGUF file") as out_partial, \
            journaled(Path(f"{out_partial}.f16.gguf")) as base:
        try:
            export_gguf(model, tokenizer, base, "F16", pre=pre, name=name)
            yield Progress("writing GGUF", 1, 2)
            seconds = yield from iter_quantize_file(base, out_partial, quant, imatrix=imatrix,
                                                    keep_embedding=keep_embedding, threads=threads)
        finally:
            base.unlink(missing_ok=True)
    yield Progress("writing GGUF", 2, 2)
    return {"path": str(path), "bytes": path.stat().st_size, "quant": quant, "quantize_seconds": seconds,
            "imatrix": str(imatrix) if imatrix is not None else None}
