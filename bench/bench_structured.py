"""Structured pruning benchmark on the bundled model: dense vs MLP −25% vs dropping 10 of 30 layers.

    .venv/bin/python bench/bench_structured.py [--calibration-windows 16] [--windows 20] [--sequence-length 512]
                                               [--speed-rounds 7] [--methods "dense,MLP -25%"]

Each row loads a fresh SmolLM2-135M in this process, applies one structured step (calibration on
bundled:wiki-calibration), then measures parameters and perplexity on bundled:wiki-evaluation (held
out).  Decode speed (greedy, KV cache, ``core.eval.speed.measure_speed`` defaults) is measured last, with
all three models in memory and interleaved round by round (dense, MLP, drop, dense, ...), each
row's figure the median over ``--speed-rounds`` rounds, so a change in machine load hits every row
alike.  Speed-ups are relative to the dense row of the same run.

Decode on a CPU is memory-bound: every new token reads every weight matrix once (the tied
lm_head too, 49152×576 on SmolLM2; the embedding lookup reads one row), plus the KV cache.  So
the speed-up of a smaller model is bounded by (values read per token before) / (after); the
table prints that bound next to the measured figure (:func:`values_read_per_token`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_window_arguments, apply_step, print_table, write_results  # noqa: E402

METHODS = {  # row name -> (technique, params)
    "dense": (None, {}),
    "MLP -25%": ("mlp_prune", {"reduction": 0.25}),  # 1536 -> 1152 = 9 x 128: already 64/128-aligned
    "MLP -25% unaligned": ("mlp_prune", {"reduction": 1 - 1144 / 1536, "multiple_of": 8}),  # 1144, not /64
    "drop 10 of 30 layers": ("layer_drop", {"layers_to_drop": 10}),
}


def values_read_per_token(model, context_tokens: int) -> dict:
    """Values one cached decode step reads: weights of every Linear (lm_head included, even when tied),
    one embedding row per embedding table, norm weights, and the KV cache at ``context_tokens``."""
    from torch import nn

    weights = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            weights += module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
        elif isinstance(module, nn.Embedding):
            weights += module.embedding_dim  # a lookup reads one row, not the matrix
        elif not list(module.children()):
            weights += sum(p.numel() for p in module.parameters(recurse=False))  # norms
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * context_tokens
    return {"weights": weights, "kv_cache": kv}


def run_one(method: str, args: argparse.Namespace, eval_windows):
    """Load the model, apply one method, measure its size and perplexity; return (row, model, tokenizer)."""
    from core.eval.perplexity import perplexity
    from core.models.loading import load_model
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
    read = values_read_per_token(model, context_tokens=128 + 16)  # mid-way through 32 new tokens after 128
    row["read_weights_m"], row["read_kv_m"] = read["weights"] / 1e6, read["kv_cache"] / 1e6
    row["layers"] = model.config.num_hidden_layers
    row["intermediate"] = model.config.intermediate_size
    started = time.perf_counter()
    row["perplexity"] = perplexity(model, eval_windows).perplexity
    row["eval_s"] = time.perf_counter() - started
    return row, model, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_arguments(parser, calibration=16, windows=20, sequence_length=512)
    parser.add_argument("--speed-rounds", type=int, default=7, help="interleaved speed rounds per model")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated row names (dense first)")
    args = parser.parse_args()
    chosen = [m.strip() for m in args.methods.split(",")]
    if chosen[0] != "dense" or any(m not in METHODS for m in chosen):
        raise SystemExit(f"--methods must start with 'dense' and name rows from: {', '.join(METHODS)}")

    from core.data.texts import load_texts, token_windows
    from core.eval.speed import measure_speed
    from core.models.loading import load_model

    tokenizer = load_model("bundled:smollm2-135m").tokenizer  # converts the GGUF once, outside the timings
    eval_windows = token_windows(load_texts("bundled:wiki-evaluation"), tokenizer, args.sequence_length,
                                 args.windows)
    rows, models = [], []
    for method in chosen:
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
        row["bound_weights"] = dense["read_weights_m"] / row["read_weights_m"]
        row["bound"] = ((dense["read_weights_m"] + dense["read_kv_m"]) / (row["read_weights_m"] + row["read_kv_m"]))
        row["of_bound"] = (row["speedup"] - 1) / (row["bound"] - 1) if row["bound"] > 1 else None
    print()
    print_table(rows, [("method", "method", ""), ("params_m", "params M", ".2f"),
                       ("params_share", "vs dense", ".2f"), ("layers", "layers", "d"),
                       ("intermediate", "MLP width", "d"), ("perplexity", "perplexity", ".2f"),
                       ("read_weights_m", "read/token M", ".2f"), ("bound", "bound", ".3f"),
                       ("decode_tokens_per_s", "decode tok/s", ".1f"), ("speedup", "speed-up", ".2f"),
                       ("of_bound", "share of bound gain", ".2f"),
                       ("prefill_ms", "prefill ms", ".0f"), ("prune_s", "prune s", ".1f"),
                       ("eval_s", "ppl s", ".1f"), ("wall_s", "load+prune+ppl s", ".1f")])
    print("\nbound = values read per decoded token, dense / this row (weights incl. the tied lm_head read every "
          "token, one embedding row, norms, KV cache at 144 tokens of context); on a memory-bound CPU the decode "
          "speed-up cannot exceed it.")
    for row in rows[1:]:
        print(f"  {row['method']}: {dense['read_weights_m']:.2f}M + {dense['read_kv_m']:.2f}M KV  /  "
              f"{row['read_weights_m']:.2f}M + {row['read_kv_m']:.2f}M KV  =  {row['bound']:.3f}x  "
              f"(weights alone {row['bound_weights']:.3f}x); measured {row['speedup']:.3f}x")
    settings = dict(vars(args))
    settings["model"] = "bundled:smollm2-135m"
    settings["calibration"], settings["evaluation"] = "bundled:wiki-calibration", "bundled:wiki-evaluation"
    settings["speed"] = ("core.eval.speed.measure_speed defaults (128 prompt tokens, 32 new tokens, median of 3), "
                         "interleaved across models; median over speed rounds")
    settings["load_average_1_5_15"] = list(os.getloadavg())
    path = write_results("structured" if chosen == list(METHODS) else "structured_selection", rows, settings)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
