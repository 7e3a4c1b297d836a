"""GGUF benchmark (issue 22): llama.cpp's own perplexity of our GGUF exports, without and with our importance matrix.

    .venv/bin/python bench/bench_gguf.py [--types Q4_0,Q4_K_M,Q5_K_M,Q6_K,IQ4_XS] [--chunks 8] [--context 512]
        [--calibration-windows 32]

On the bundled model (SmolLM2-135M, loaded as float weights): our F16 export, then each type made by llama.cpp's
``llama-quantize`` from it, once without an importance matrix and once with ours (core.engine.imatrix: the
block-by-block calibration engine on ``--calibration-windows`` chunks of 512 tokens of the bundled Wikipedia
calibration text).  Each file's size on disk and ``llama-perplexity`` on the first ``--chunks`` chunks of the
bundled held-out Wikipedia text (llama.cpp's convention: the second half of each chunk scored); quantize time.
Needs llama.cpp's tools (`make llama-cpp`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, provenance, write_results  # noqa: E402

DEFAULT_TYPES = "Q4_0,Q4_K_M,Q5_K_M,Q6_K,IQ4_XS"
PRE = "smollm"  # the bundled GGUF's pre-tokenizer name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default=DEFAULT_TYPES)
    parser.add_argument("--chunks", type=int, default=8, help="held-out chunks llama-perplexity scores")
    parser.add_argument("--context", type=int, default=512, help="tokens per chunk (perplexity and imatrix)")
    parser.add_argument("--calibration-windows", type=int, default=32)
    parser.add_argument("--name", default="gguf")
    args = parser.parse_args(argv)

    from core.data.texts import load_texts
    from core.engine.gguf_job import iter_imatrix_file
    from core.events import drain
    from core.io.gguf_export import export_gguf
    from core.io.gguf_quantize import iter_quantize_file
    from core.io.llama_cpp_tools import perplexity, require_tool
    from core.models.loading import load_model

    for tool in ("llama-quantize", "llama-perplexity"):
        require_tool(tool)
    started = provenance()
    loaded = load_model("bundled:smollm2-135m")
    parameters = sum(p.numel() for p in loaded.model.parameters())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as tmp:
        folder = Path(tmp)
        held_out = folder / "held-out.txt"
        held_out.write_text("\n\n".join(load_texts("bundled:wiki-evaluation")) + "\n")
        imatrix = folder / "smollm.imatrix.gguf"
        clock = time.perf_counter()
        drain(iter_imatrix_file(loaded.model, loaded.tokenizer, imatrix, load_texts("bundled:wiki-calibration"),
                                dataset="bundled:wiki-calibration", sequence_length=args.context,
                                windows=args.calibration_windows))
        imatrix_seconds = time.perf_counter() - clock
        f16 = folder / "F16.gguf"
        export_gguf(loaded.model, loaded.tokenizer, f16, "F16", pre=PRE)
        reference = perplexity(f16, held_out, args.context, args.chunks)
        rows.append({"type": "F16", "mb": f16.stat().st_size / 1e6, "ppl": reference["perplexity"],
                     "ppl_imatrix": None, "quantize_s": None, "quantize_imatrix_s": None})
        for quant in args.types.split(","):
            row = {"type": quant}
            for key, matrix in (("", None), ("_imatrix", imatrix)):
                path = folder / f"{quant}{key}.gguf"
                # from the one F16 export, as the export job quantizes its own F16 file
                row[f"quantize{key}_s"] = drain(iter_quantize_file(f16, path, quant, imatrix=matrix))
                row[f"ppl{key}"] = perplexity(path, held_out, args.context, args.chunks)["perplexity"]
                row["mb"] = path.stat().st_size / 1e6
                path.unlink()
            rows.append(row)
            print(f"{quant}: {row}", flush=True)
    print_table(rows, [("type", "type", "s"), ("mb", "MB", ".1f"), ("ppl", "ppl (no imatrix)", ".3f"),
                       ("ppl_imatrix", "ppl (our imatrix)", ".3f"), ("quantize_s", "quantize s", ".1f")])
    settings = {**vars(args), "model": "bundled:smollm2-135m", "parameters": parameters,
                "chunks_scored": reference["chunks"], "imatrix_seconds": imatrix_seconds,
                "calibration": "bundled:wiki-calibration", "held_out": "bundled:wiki-evaluation"}
    path = write_results(args.name, rows, settings, started)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
