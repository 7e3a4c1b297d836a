"""Pruning benchmark on the bundled model: dense vs magnitude, Wanda (uniform and OWL) and SparseGPT.

    .venv/bin/python bench/bench_prune.py [--calibration-windows 32] [--windows 40] [--sequence-length 512]

Every method runs in its own child process on a freshly loaded SmolLM2-135M, so each row's
peak RSS is that method's own (load + calibration + pruning + evaluation).  Calibration windows
come from bundled:wiki-calibration, perplexity from bundled:wiki-evaluation (held out).  The
wall time is the pruning step alone (calibration included); evaluation is timed apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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

METHODS = {  # row name -> (technique, params)
    "dense": (None, {}),
    "magnitude 50%": ("magnitude_prune", {"sparsity": 0.5}),
    "Wanda 50%": ("wanda_prune", {"sparsity": 0.5}),
    "Wanda 50% OWL": ("wanda_prune", {"sparsity": 0.5, "schedule": "owl"}),
    "Wanda 70%": ("wanda_prune", {"sparsity": 0.7}),
    "Wanda 70% OWL": ("wanda_prune", {"sparsity": 0.7, "schedule": "owl"}),
    "Wanda 2:4": ("wanda_prune", {"pattern": "2:4"}),
    "SparseGPT 50%": ("sparsegpt_prune", {"sparsity": 0.5}),
    "SparseGPT 2:4": ("sparsegpt_prune", {"pattern": "2:4"}),
}


def run_one(method: str, args: argparse.Namespace) -> dict:
    """Load the model, apply one method, measure it; return its row."""
    from core.data.texts import load_texts, token_windows
    from core.eval.perplexity import perplexity
    from core.models.loading import load_model
    from core.models.model_info import inspect_model

    technique, params = METHODS[method]
    loaded = load_model("bundled:smollm2-135m")
    model, tokenizer = loaded.model, loaded.tokenizer
    row: dict = {"method": method, "pattern": params.get("pattern", "unstructured" if technique else "—"),
                 "schedule": params.get("schedule", "uniform" if technique else "—"), "prune_s": 0.0}
    if technique:
        report, row["prune_s"] = apply_step(model, tokenizer, technique, params, sequence_length=args.sequence_length,
                                          calibration_windows=args.calibration_windows)
        row["sparsity"] = report.metrics["sparsity"]
        if "block_sparsity_min" in report.metrics:
            row["block_sparsity"] = f"{report.metrics['block_sparsity_min']:.2f}-{report.metrics['block_sparsity_max']:.2f}"
    summary = inspect_model(model, with_layers=False)
    row["nonzero_m"] = summary.nonzero_parameters / 1e6
    row["params_m"] = summary.parameters / 1e6
    windows = token_windows(load_texts("bundled:wiki-evaluation"), tokenizer, args.sequence_length,
                            args.windows or None)
    started = time.perf_counter()
    row["perplexity"] = perplexity(model, windows).perplexity
    row["eval_s"] = time.perf_counter() - started
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_arguments(parser, calibration=32, windows=40, sequence_length=512)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated row names")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # child process: one method, JSON to --json-out
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        Path(args.json_out).write_text(json.dumps(run_one(args.only, args)))
        return

    from core.models.loading import load_model

    load_model("bundled:smollm2-135m")  # convert the GGUF into the cache once, outside the timings
    rows = []
    for method in [m.strip() for m in args.methods.split(",")]:
        if method not in METHODS:
            raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        rows.append(run_child_checked(__file__, [
            "--only", method, "--calibration-windows", str(args.calibration_windows), "--windows", str(args.windows),
            "--sequence-length", str(args.sequence_length)]))
        print(f"{method}: perplexity {rows[-1]['perplexity']:.3f}, {rows[-1]['prune_s']:.1f} s", flush=True)
    print()
    print_table(rows, [("method", "method", ""), ("pattern", "pattern", ""), ("schedule", "schedule", ""),
                       ("block_sparsity", "per-block sparsity", ""),
                       ("nonzero_m", "non-zero params M", ".2f"), ("sparsity", "sparsity (targets)", ".3f"),
                       ("perplexity", "perplexity", ".3f"), ("prune_s", "prune wall s", ".1f"),
                       ("eval_s", "eval s", ".1f"), ("peak_rss_mb", "peak RSS MB", ".0f")])
    settings = {k: v for k, v in vars(args).items() if k not in ("only", "json_out")}
    settings["model"] = "bundled:smollm2-135m"
    settings["calibration"], settings["evaluation"] = "bundled:wiki-calibration", "bundled:wiki-evaluation"
    chosen = [m.strip() for m in args.methods.split(",")]
    path = write_results("prune" if chosen == list(METHODS) else "prune_selection", rows, settings)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
