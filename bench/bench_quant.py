"""Quantization benchmark on the bundled model: one table of every method of issue 6.

    .venv/bin/python bench/bench_quant.py [--calibration-windows 64] [--windows 40] [--sequence-length 512]
                                          [--methods "RTN 4-bit g64,GPTQ+MSE 4-bit g64"] [--jobs 1] [--no-speed]

Columns: method, bits, group, size on disk (MB, weight files of the saved folder), in-memory size
(MB, every parameter and buffer once; "loaded" right after the reload, "in use" after the
evaluation, when 4-bit layers also hold the CPU int4 kernel's copy of their codes), effective bits per weight (of the quantized layers, scales
and zero points included, and of the whole model), perplexity, quantization wall time, peak RSS
of the row's process, decode tokens/s (``core.eval.speed.measure_speed``: 64-token prompt, 32 new
tokens, median of 3), and the largest logit difference between the in-memory and the reloaded
model.

Every row runs in its own child process on a freshly loaded SmolLM2-135M, so its peak RSS is its
own (load + calibration + quantization + save + reload + evaluation).  Calibration windows come
from bundled:wiki-calibration, perplexity from bundled:wiki-evaluation (held out).  The quantized
model is saved, its folder measured, reloaded with our loader, and the reloaded model is the one
evaluated.  SmolLM2's hidden width 576 is not a multiple of 128, so group 128 is impossible there
(equal groups only): the nearest valid sizes, 64 and 192, are measured instead.  "+MSE" rows
search each group's clipping range (clip=mse); "seq" rows use GPTQ's true-sequential order; "asym" rows store a zero point per group as well (symmetric: false, as HQQ does).  "Mixed" rows choose per-layer widths by Fisher
sensitivity to a target of stored bits per weight.  Wall time is the quantization step alone;
with ``--jobs`` > 1 rows share the CPU, so their times are only comparable with each other.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    add_window_arguments,
    apply_step,
    peak_rss_mb,
    print_table,
    run_child_checked,
    write_results,
)

MSE = {"clip": "mse"}
METHODS = {  # row name -> (technique, params); bits and group are read from the params
    "unquantized": (None, {}),
    "RTN 8-bit g64": ("rtn_quantize", {"bits": 8, "group_size": 64}),
    "RTN 4-bit g64": ("rtn_quantize", {"bits": 4, "group_size": 64}),
    "RTN+MSE 4-bit g64": ("rtn_quantize", {"bits": 4, "group_size": 64, **MSE}),
    "GPTQ 4-bit g64": ("gptq_quantize", {"bits": 4, "group_size": 64}),
    "GPTQ+MSE 4-bit g64": ("gptq_quantize", {"bits": 4, "group_size": 64, **MSE}),
    "RTN 4-bit g64 asym": ("rtn_quantize", {"bits": 4, "group_size": 64, "symmetric": False}),
    "GPTQ 4-bit g64 asym": ("gptq_quantize", {"bits": 4, "group_size": 64, "symmetric": False}),
    "GPTQ 4-bit g64 static": ("gptq_quantize", {"bits": 4, "group_size": 64, "static_groups": True}),
    "GPTQ 4-bit g64 asym static": ("gptq_quantize", {"bits": 4, "group_size": 64, "symmetric": False,
                                                     "static_groups": True}),
    "GPTQ 4-bit g64 asym act": ("gptq_quantize", {"bits": 4, "group_size": 64, "symmetric": False,
                                                  "act_order": True}),
    "GPTQ+MSE 4-bit g64 asym act": ("gptq_quantize", {"bits": 4, "group_size": 64, "symmetric": False,
                                                      "act_order": True, **MSE}),
    "GPTQ 4-bit g64 act": ("gptq_quantize", {"bits": 4, "group_size": 64, "act_order": True}),
    "GPTQ+MSE 4-bit g64 act": ("gptq_quantize", {"bits": 4, "group_size": 64, "act_order": True, **MSE}),
    "RTN 4-bit g192": ("rtn_quantize", {"bits": 4, "group_size": 192}),
    "RTN+MSE 4-bit g192": ("rtn_quantize", {"bits": 4, "group_size": 192, **MSE}),
    "GPTQ 4-bit g192": ("gptq_quantize", {"bits": 4, "group_size": 192}),
    "GPTQ+MSE 4-bit g192": ("gptq_quantize", {"bits": 4, "group_size": 192, **MSE}),
    "RTN 3-bit g64": ("rtn_quantize", {"bits": 3, "group_size": 64}),
    "RTN+MSE 3-bit g64": ("rtn_quantize", {"bits": 3, "group_size": 64, **MSE}),
    "GPTQ 3-bit g64": ("gptq_quantize", {"bits": 3, "group_size": 64}),
    "GPTQ+MSE 3-bit g64": ("gptq_quantize", {"bits": 3, "group_size": 64, **MSE}),
    "GPTQ+MSE 3-bit g64 act": ("gptq_quantize", {"bits": 3, "group_size": 64, "act_order": True, **MSE}),
    "GPTQ+MSE 4-bit g64 seq": ("gptq_quantize", {"bits": 4, "group_size": 64, "true_sequential": True, **MSE}),
    "GPTQ+MSE 3-bit g64 seq": ("gptq_quantize", {"bits": 3, "group_size": 64, "true_sequential": True, **MSE}),
    "Mixed GPTQ+MSE 4/8 g64 avg 5.0": ("mixed_precision_quantize",
                                       {"bits": 4, "high_bits": 8, "group_size": 64, "target_bits": 5.0, **MSE}),
    "Mixed RTN 4/8 g64 avg 5.0": ("mixed_precision_quantize",
                                  {"bits": 4, "high_bits": 8, "group_size": 64, "target_bits": 5.0,
                                   "method": "rtn"}),
    "Mixed GPTQ+MSE 3..8 g64 avg 4.5": ("mixed_precision_quantize",
                                        {"bits": 3, "high_bits": 8, "intermediate": True, "group_size": 64,
                                         "target_bits": 4.5, **MSE}),
    "RTN 3-bit g64 asym": ("rtn_quantize", {"bits": 3, "group_size": 64, "symmetric": False}),
    "GPTQ+MSE 3-bit g64 asym act": ("gptq_quantize", {"bits": 3, "group_size": 64, "symmetric": False,
                                                      "act_order": True, **MSE}),
    "Mixed GPTQ+MSE 4/8 g64 asym act avg 5.0": ("mixed_precision_quantize",
                                                {"bits": 4, "high_bits": 8, "group_size": 64, "target_bits": 5.0,
                                                 "symmetric": False, "act_order": True, **MSE}),
    # 4.5625 bits: what uniform 4-bit g64 asymmetric stores, so this row compares at equal size
    "Mixed GPTQ+MSE 3..8 g64 asym act avg 4.56": ("mixed_precision_quantize",
                                                  {"bits": 3, "high_bits": 8, "intermediate": True, "group_size": 64,
                                                   "target_bits": 4.5625, "symmetric": False, "act_order": True,
                                                   **MSE}),
    "bnb int8": ("bnb_quantize", {"mode": "int8"}),
    "bnb nf4": ("bnb_quantize", {"mode": "nf4"}),
    "dynamic int8": ("dynamic_int8", {"measure_speed": False}),
    "dynamic int8 no smoothing": ("dynamic_int8", {"measure_speed": False, "smoothing": 0.0}),
}
DEFAULT = [m for m in METHODS if not m.endswith(" act")]


def run_one(method: str, args: argparse.Namespace) -> dict:
    """Load the model, quantize it, save, reload and measure it; return its row."""
    import torch

    from core.data.texts import load_texts, token_windows
    from core.eval.perplexity import perplexity
    from core.io.saving import save_model
    from core.models.loading import load_model
    from core.models.model_info import bytes_in_memory, folder_weight_bytes, inspect_model

    technique, params = METHODS[method]
    loaded = load_model("bundled:smollm2-135m")
    model, tokenizer = loaded.model.to(args.device), loaded.tokenizer
    windows = token_windows(load_texts("bundled:wiki-evaluation"), tokenizer, args.sequence_length,
                            args.windows or None).to(args.device)
    row: dict = {"method": method, "quant_s": 0.0, "bits": params.get("bits", {"int8": 8, "nf4": 4}.get(
        params.get("mode"), 8 if technique == "dynamic_int8" else None)), "group": params.get("group_size")}
    if technique and technique.startswith("mixed"):
        row["bits"] = f"{params['bits']}..{params['high_bits']}" if params.get("intermediate") else \
            f"{params['bits']}/{params['high_bits']}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        if technique:
            report, row["quant_s"] = apply_step(model, tokenizer, technique, params, sequence_length=args.sequence_length,
                                              calibration_windows=args.calibration_windows, device=args.device)
            row["layer_bits"] = report.metrics["bits_per_weight"]
            row["notes"] = report.summary
            with torch.no_grad():
                before = model(windows[:1]).logits
        save_model(model, tokenizer, folder)
        row["disk_mb"] = folder_weight_bytes(folder) / 1e6
        if technique:
            del model
            model = load_model(str(folder)).model.to(args.device)
            with torch.no_grad():
                row["reload_diff"] = float((model(windows[:1]).logits - before).abs().max())
    summary = inspect_model(model, with_layers=False)
    row["memory_loaded_mb"] = bytes_in_memory(model) / 1e6
    row["model_bits"] = summary.bits_per_weight
    started = time.perf_counter()
    row["perplexity"] = perplexity(model, windows).perplexity
    row["eval_s"] = time.perf_counter() - started
    row["memory_mb"] = bytes_in_memory(model) / 1e6  # after use: 4-bit layers then hold the CPU kernel's copy
    row["peak_rss_mb"] = peak_rss_mb()
    if args.device.startswith("cuda"):
        import torch

        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 1e6
    if args.speed:
        from core.eval.speed import measure_speed

        row["decode_tok_s"] = measure_speed(model, tokenizer, prompt_tokens=64, new_tokens=32).decode_tokens_per_s
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_arguments(parser, calibration=64, windows=40, sequence_length=512)
    parser.add_argument("--methods", default=",".join(DEFAULT),
                        help="comma-separated row names (default: all but the act-order rows)")
    parser.add_argument("--no-speed", dest="speed", action="store_false", help="skip decode tokens/s")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (rows run and are timed there)")
    parser.add_argument("--jobs", type=int, default=1, help="rows run at once (each its own process)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per row (0 = torch's default)")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # child process: one method, JSON to --json-out
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        Path(args.json_out).write_text(json.dumps(run_one(args.only, args)))
        return

    from core.models.loading import load_model

    load_model("bundled:smollm2-135m")  # convert the GGUF into the cache once, outside the timings
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")

    def child(method: str) -> dict:
        row = run_child_checked(__file__, [
            "--only", method, "--calibration-windows", str(args.calibration_windows), "--windows", str(args.windows),
            "--sequence-length", str(args.sequence_length), "--threads", str(args.threads), "--device", args.device,
            *([] if args.speed else ["--no-speed"])])
        print(f"{method}: perplexity {row['perplexity']:.3f}, {row['quant_s']:.1f} s", flush=True)
        print("ROW " + json.dumps(row), flush=True)  # a run stopped early still leaves its finished rows
        return row

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # rows keep the order asked for
        rows = list(pool.map(child, methods))
    print()
    print_table(rows, [("method", "method", ""), ("bits", "bits", ""), ("group", "group", ""),
                       ("disk_mb", "disk MB", ".1f"), ("memory_loaded_mb", "memory loaded MB", ".1f"),
                       ("memory_mb", "memory in use MB", ".1f"),
                       ("layer_bits", "bits/weight (quantized layers)", ".3f"),
                       ("model_bits", "bits/weight (whole model)", ".2f"), ("perplexity", "perplexity", ".3f"),
                       ("quant_s", "quantize wall s", ".1f"), ("peak_rss_mb", "peak RSS MB", ".0f"),
                       ("decode_tok_s", "decode tok/s", ".1f"), ("reload_diff", "reload max |Δlogit|", ".2e")])
    settings = {k: v for k, v in vars(args).items() if k not in ("only", "json_out")}
    settings["model"] = "bundled:smollm2-135m"
    settings["calibration"], settings["evaluation"] = "bundled:wiki-calibration", "bundled:wiki-evaluation"
    path = write_results("quant", rows, settings)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
