"""Structured pruning benchmark on the bundled model: dense vs MLP −25% vs dropping 10 of 30 layers.

    .venv/bin/python bench/bench_structured.py [--calibration-windows 16] [--windows 20] [--sequence-length 512]

Each row loads a fresh SmolLM2-135M in this process, applies one structured step (calibration on
bundled:wiki-calibration), then measures parameters and perplexity on bundled:wiki-evaluation (held
out).  Decode speed (greedy, KV cache, ``core.speed.measure_speed`` defaults) is measured last, with
all three models in memory and interleaved round by round (dense, MLP, drop, dense, ...), each
row's figure the median over ``--speed-rounds`` rounds, so a change in machine load hits every row
alike.  Speed-ups are relative to the dense row of the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import apply_step, print_table, write_results  # noqa: E402

METHODS = {  # row name -> (technique, params)
    "dense": (None, {}),
    "MLP -25%": ("mlp_prune", {"reduction": 0.25}),
    "drop 10 of 30 layers": ("layer_drop", {"layers_to_drop": 10}),
}


def run_one(method: str, args: argparse.Namespace, eval_windows):
    """Load the model, apply one method, measure its size and perplexity; return (row, model, tokenizer)."""
    from core.evaluate import perplexity
    from core.models import load_model
    from core.techniques.prune.structured import parameter_count

    technique, params = METHODS[method]
    loaded = load_model("bundled:smollm2-135m")
    model, tokenizer = loaded.model, loaded.tokenizer
    row: dict = {"method": method, "prune_s": 0.0}
    if technique:
        report, row["prune_s"] = apply_step(model, tokenizer, technique, params, sequence_length=args.sequence_length,
                                          calibration_windows=args.calibration_windows)
        row["summary"] = report.summary
    row["params_m"] = parameter_count(model) / 1e6
    row["layers"] = model.config.num_hidden_layers
    row["intermediate"] = model.config.intermediate_size
    started = time.perf_counter()
    row["perplexity"] = perplexity(model, eval_windows).perplexity
    row["eval_s"] = time.perf_counter() - started
    return row, model, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration-windows", type=int, default=16)
    parser.add_argument("--windows", type=int, default=20, help="evaluation windows")
    parser.add_argument("--sequence-length", type=int, default=512)
    parser.add_argument("--speed-rounds", type=int, default=3, help="interleaved speed rounds per model")
    args = parser.parse_args()

    from core.data import load_texts, token_windows
    from core.models import load_model
    from core.speed import measure_speed

    tokenizer = load_model("bundled:smollm2-135m").tokenizer  # converts the GGUF once, outside the timings
    eval_windows = token_windows(load_texts("bundled:wiki-evaluation"), tokenizer, args.sequence_length,
                                 args.windows)
    rows, models = [], []
    for method in METHODS:
        started = time.perf_counter()
        row, model, model_tokenizer = run_one(method, args, eval_windows)
        row["wall_s"] = time.perf_counter() - started
        rows.append(row)
        models.append((model, model_tokenizer))
        print(f"{method}: perplexity {row['perplexity']:.3f}, {row['wall_s']:.1f} s", flush=True)
    speeds: list[list] = [[] for _ in rows]
    for round_index in range(args.speed_rounds):
        for (model, model_tokenizer), runs in zip(models, speeds, strict=True):
            runs.append(measure_speed(model, model_tokenizer))
        print(f"speed round {round_index + 1}: "
              + ", ".join(f"{runs[-1].decode_tokens_per_s:.1f}" for runs in speeds) + " tokens/s", flush=True)
    for row, runs in zip(rows, speeds, strict=True):
        row["decode_tokens_per_s"] = statistics.median(r.decode_tokens_per_s for r in runs)
        row["prefill_ms"] = statistics.median(r.prefill_ms for r in runs)
        row["decode_rounds"] = [r.decode_tokens_per_s for r in runs]
    dense = rows[0]
    for row in rows:
        row["speedup"] = row["decode_tokens_per_s"] / dense["decode_tokens_per_s"]
        row["params_share"] = row["params_m"] / dense["params_m"]
    print()
    print_table(rows, [("method", "method", ""), ("params_m", "params M", ".2f"),
                       ("params_share", "vs dense", ".2f"), ("layers", "layers", "d"),
                       ("intermediate", "MLP width", "d"), ("perplexity", "perplexity", ".2f"),
                       ("decode_tokens_per_s", "decode tok/s", ".1f"), ("speedup", "speed-up", ".2f"),
                       ("prefill_ms", "prefill ms", ".0f"), ("prune_s", "prune s", ".1f"),
                       ("eval_s", "ppl s", ".1f"), ("wall_s", "load+prune+ppl s", ".1f")])
    settings = dict(vars(args))
    settings["model"] = "bundled:smollm2-135m"
    settings["calibration"], settings["evaluation"] = "bundled:wiki-calibration", "bundled:wiki-evaluation"
    settings["speed"] = ("core.speed.measure_speed defaults (128 prompt tokens, 32 new tokens, median of 3), "
                         "interleaved across models; median over speed rounds")
    settings["load_average_1_5_15"] = list(os.getloadavg())
    path = write_results("structured", rows, settings)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
