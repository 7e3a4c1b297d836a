"""GGUF benchmark (issue 22): llama.cpp's own perplexity of our GGUF exports, without and with our importance matrix.

    .venv/bin/python bench/bench_gguf.py [--types Q4_0,Q4_K_M,Q5_K_M,Q6_K,IQ4_XS] [--chunks 8] [--context 512]
        [--calibration-windows 32]

On the bundled model (SmolLM2-135M, loaded as float weights): our F16 export, then each type made by llama.cpp's
``llama-quantize`` from it, once without an importance matrix and once with ours (core.engine.imatrix: the
block-by-block calibration engine on ``--calibration-windows`` chunks of 512 tokens of the bundled Wikipedia
calibration text).  Each file's size on disk and ``llama-perplexity`` on the first ``--chunks`` chunks of the
bundled held-out Wikipedia text (llama.cpp's convention: the second half of each chunk scored); quantize time.
Needs llama.cpp's tools (`make llama-cpp`).

GPTQ-on-grid (``--gptq-types``, Q4_0 by default; Q8_0 too if asked): the registered GPTQ step with ``grid`` q4_0 /
q8_0 (act-order) run through the runner on the same calibration chunks as the imatrix, its result folder exported
by the Export page's job to that type (no second rounding: the file holds GPTQ's codes) and measured the same way.
``--lowrank R`` measures a second model instead of the bundled one: the bundled model with the registered
``svd_lowrank`` step (activation-aware, ``target_reduction`` R, factors merged back into dense Linears) run
through the runner first, so that its weights no longer sit on the bundled file's 4-bit grid (SmolLM2 ships as
Q4_1, which favours plain rounding back to a 4-bit grid); the result folder is then the model of every column.
``--only-gptq`` measures just these columns and keeps the other columns of the committed result (the imatrix pass
alone takes about 20 minutes on the 2-core machine); the result's settings then say which run they came from.
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
    parser.add_argument("--gptq-types", default="Q4_0", help="types to run GPTQ-on-grid for (Q4_0, Q8_0; '' none)")
    parser.add_argument("--lowrank", type=float, default=0.0,
                        help="measure the bundled model after low-rank factorization merged to dense (this share "
                             "of parameters removed) instead of the bundled model itself")
    parser.add_argument("--only-gptq", action="store_true",
                        help="measure only the GPTQ-on-grid columns; keep the committed result's other columns")
    args = parser.parse_args(argv)
    if args.only_gptq and args.lowrank:
        parser.error("--only-gptq adds to the committed bundled-model result; run --lowrank without it")
    if args.only_gptq:
        return only_gptq(args)

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
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as tmp:
        folder = Path(tmp)
        args.source = lowrank_source(folder, args) if args.lowrank else "bundled:smollm2-135m"
        loaded = load_model(args.source)
        parameters = sum(p.numel() for p in loaded.model.parameters())
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
            if quant in gptq_types(args):
                row.update(gptq_on_grid(quant, folder, held_out, args))
            for key, matrix in (("", None), ("_imatrix", imatrix)):
                path = folder / f"{quant}{key}.gguf"
                # from the one F16 export, as the export job quantizes its own F16 file
                row[f"quantize{key}_s"] = drain(iter_quantize_file(f16, path, quant, imatrix=matrix))
                row[f"ppl{key}"] = perplexity(path, held_out, args.context, args.chunks)["perplexity"]
                row["mb"] = path.stat().st_size / 1e6
                path.unlink()
            rows.append(row)
            print(f"{quant}: {row}", flush=True)
    print_table(rows, COLUMNS)
    settings = {**vars(args), "parameters": parameters,
                "model": "bundled:smollm2-135m" + (f", low-rank {args.lowrank:.0%} merged to dense" if args.lowrank else ""),
                "chunks_scored": reference["chunks"], "imatrix_seconds": imatrix_seconds,
                "calibration": "bundled:wiki-calibration", "held_out": "bundled:wiki-evaluation",
                "gptq": GPTQ_SETTINGS, "gptq_calibration_windows": args.calibration_windows}
    path = write_results(args.name, rows, settings, started)
    print(f"wrote {path}")
    return 0


COLUMNS = [("type", "type", "s"), ("mb", "MB", ".1f"), ("ppl", "ppl (no imatrix)", ".3f"),
           ("ppl_imatrix", "ppl (our imatrix)", ".3f"), ("ppl_gptq", "ppl (GPTQ-on-grid)", ".3f"),
           ("quantize_s", "quantize s", ".1f")]
GPTQ_SETTINGS = {"act_order": True, "dampening": 0.01}  # the step's recommended 4-bit setting (see its help)


def lowrank_source(folder: Path, args) -> str:
    """The bundled model after the registered svd_lowrank step (merged to dense), saved by the runner; its folder."""
    from core.engine.recipe import Recipe
    from core.engine.runner import run_recipe
    from core.events import drain

    recipe = Recipe.from_dict({
        "name": "lowrank-source", "model": {"source": "bundled:smollm2-135m"},
        "data": {"calibration": "bundled:wiki-calibration", "evaluation": "bundled:wiki-evaluation",
                 "sequence_length": args.context, "calibration_windows": args.calibration_windows},
        "evaluation": {"max_windows": 1},
        "steps": [{"technique": "svd_lowrank", "params": {"target_reduction": args.lowrank, "merge_to_dense": True}}]})
    result = folder / "lowrank-source"
    clock = time.perf_counter()
    drain(run_recipe(recipe, result))
    args.lowrank_s = time.perf_counter() - clock
    return str(result)


def gptq_types(args) -> list[str]:
    return [t for t in args.gptq_types.split(",") if t]


def gptq_on_grid(quant: str, folder: Path, held_out: Path, args) -> dict:
    """GPTQ with ``grid`` = ``quant`` through the runner, exported to a ``quant`` GGUF by the Export page's job;
    llama.cpp's perplexity of that file, its size and the GPTQ run's seconds."""
    from core.engine.recipe import Recipe
    from core.engine.runner import run_recipe
    from core.events import drain
    from core.io.export import iter_export_gguf
    from core.io.llama_cpp_tools import perplexity

    bits = {"Q4_0": 4, "Q8_0": 8}[quant]
    recipe = Recipe.from_dict({
        "name": f"gptq-{quant.lower()}", "model": {"source": getattr(args, "source", "bundled:smollm2-135m")},
        "data": {"calibration": "bundled:wiki-calibration", "evaluation": "bundled:wiki-evaluation",
                 "sequence_length": args.context, "calibration_windows": args.calibration_windows},
        "evaluation": {"max_windows": 1},  # the runner's own measure is not reported here: llama.cpp's is
        "steps": [{"technique": "gptq_quantize", "params": {
            "bits": bits, "group_size": 32, "symmetric": True, "grid": quant.lower(), **GPTQ_SETTINGS}}]})
    result, path = folder / f"gptq-{quant}", folder / f"{quant}_gptq.gguf"
    clock = time.perf_counter()
    drain(run_recipe(recipe, result))
    seconds = time.perf_counter() - clock
    written = drain(iter_export_gguf(result, path, quant))
    row = {"ppl_gptq": perplexity(path, held_out, args.context, args.chunks)["perplexity"],
           "mb_gptq": path.stat().st_size / 1e6, "gptq_s": seconds,
           "gptq_types": sorted(set(written["types"].values()))}
    path.unlink()
    print(f"GPTQ-on-grid {quant}: {row}", flush=True)
    return row


def only_gptq(args) -> int:
    """Add the GPTQ-on-grid columns to the committed result, keeping its other columns (and saying so)."""
    import json

    from bench.common import RESULTS
    from core.data.texts import load_texts
    from core.io.gguf_export import export_gguf
    from core.io.gguf_quantize import iter_quantize_file
    from core.io.llama_cpp_tools import perplexity, require_tool
    from core.models.loading import load_model

    for tool in ("llama-quantize", "llama-perplexity"):
        require_tool(tool)
    started = provenance()
    earlier = json.loads((RESULTS / f"{args.name}.json").read_text())
    rows = earlier["rows"]
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as tmp:
        folder = Path(tmp)
        held_out = folder / "held-out.txt"
        held_out.write_text("\n\n".join(load_texts("bundled:wiki-evaluation")) + "\n")
        for quant in gptq_types(args):
            row = next((r for r in rows if r["type"] == quant), None)
            if row is None:  # a type the earlier run did not measure: llama.cpp's own (no imatrix) beside it
                from core.events import drain

                row = {"type": quant, "ppl_imatrix": None, "quantize_imatrix_s": None}
                loaded = load_model("bundled:smollm2-135m")
                f16, path = folder / "F16.gguf", folder / f"{quant}.gguf"
                export_gguf(loaded.model, loaded.tokenizer, f16, "F16", pre=PRE)
                del loaded
                row["quantize_s"] = drain(iter_quantize_file(f16, path, quant))
                row["ppl"] = perplexity(path, held_out, args.context, args.chunks)["perplexity"]
                row["mb"] = path.stat().st_size / 1e6
                rows.insert(1, row)
            row.update(gptq_on_grid(quant, folder, held_out, args))
    print_table(rows, COLUMNS)
    settings = {**earlier["settings"], "gptq_types": args.gptq_types, "gptq": GPTQ_SETTINGS,
                "gptq_calibration_windows": args.calibration_windows,
                # the other columns' own run: an earlier --only-gptq run passes on where its columns came from
                "earlier_columns": {"from": "the committed run of " + earlier["date"], "commit": earlier["commit"],
                                    **{k: v for k, v in earlier["settings"].get("earlier_columns", {}).items()
                                       if k in ("from", "commit")},
                                    "note": "only the GPTQ-on-grid columns (ppl_gptq, mb_gptq, gptq_s) and rows of "
                                            "types that run lacked were measured in this run (--only-gptq)"}}
    path = write_results(args.name, rows, settings, started)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
