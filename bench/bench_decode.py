"""Decode speed of compressed models side by side, in one process, interleaved round by round.

    .venv/bin/python bench/bench_decode.py [--rounds 7] [--rows "dense,SVD -20%,RTN 4-bit g64 asym"]

Every row is the bundled SmolLM2-135M (float32, CPU) after one step; all are held in memory at
once and timed in turn (dense, row 1, row 2, …, dense, …), so a change in machine load hits every
row alike.  Each figure is the median over ``--rounds`` rounds of ``core.eval.speed.measure_speed``
(64-token prompt, 32 new greedy tokens with the KV cache, batch 1); speed-ups are against the dense
row of the same run.  Only speed is measured: steps that need calibration text get 4 windows (the
result's shapes, and so its speed, do not depend on the data).  Plain SVD stands for every low-rank
method (activation-aware and ROM factors have the same shapes at the same target).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import apply_step, print_table, write_results  # noqa: E402

ROWS = {  # row name -> (technique, params)
    "dense": (None, {}),
    "SVD -10%": ("svd_lowrank", {"method": "plain", "target_reduction": 0.1}),
    "SVD -20%": ("svd_lowrank", {"method": "plain", "target_reduction": 0.2}),
    "SVD -40%": ("svd_lowrank", {"method": "plain", "target_reduction": 0.4}),
    "RTN 4-bit g64 asym": ("rtn_quantize", {"bits": 4, "group_size": 64, "symmetric": False}),
    "RTN 8-bit g64": ("rtn_quantize", {"bits": 8, "group_size": 64}),
    "dynamic int8": ("dynamic_int8", {"measure_speed": False, "smoothing": 0.75}),
    "bnb int8": ("bnb_quantize", {"mode": "int8"}),
    "bnb nf4": ("bnb_quantize", {"mode": "nf4"}),
}


def main() -> None:
    """Build every row's model, time them interleaved, print the table, write bench/results/decode.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names (dense first)")
    args = parser.parse_args()
    chosen = [r.strip() for r in args.rows.split(",")]
    if chosen[0] != "dense" or any(r not in ROWS for r in chosen):
        raise SystemExit(f"--rows must start with 'dense' and name rows from: {', '.join(ROWS)}")

    from core.eval.speed import measure_speed
    from core.models.loading import load_model
    from core.models.model_info import inspect_model

    models = []
    for name in chosen:
        loaded = load_model("bundled:smollm2-135m")
        technique, params = ROWS[name]
        if technique:
            apply_step(loaded.model, loaded.tokenizer, technique, params, sequence_length=512, calibration_windows=4)
        models.append((name, loaded.model, loaded.tokenizer))
        print(f"built {name}", flush=True)
    speeds: dict[str, list[float]] = {name: [] for name in chosen}
    for round_index in range(args.rounds):
        for name, model, tokenizer in models:
            speeds[name].append(measure_speed(model, tokenizer, prompt_tokens=64, new_tokens=32).decode_tokens_per_s)
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {s[-1]:.1f}" for n, s in speeds.items()), flush=True)
    dense = statistics.median(speeds["dense"])
    rows = []
    for name, model, _ in models:
        median = statistics.median(speeds[name])
        rows.append({"row": name, "params_m": inspect_model(model, with_layers=False).parameters / 1e6,
                     "decode_tok_s": median, "speedup": median / dense,
                     "spread": (max(speeds[name]) - min(speeds[name])) / median})
    print()
    print_table(rows, [("row", "row", ""), ("params_m", "params M", ".1f"), ("decode_tok_s", "decode tok/s", ".1f"),
                       ("speedup", "× dense", ".2f"), ("spread", "(max − min) / median", ".0%")])
    print(f"\nwrote {write_results('decode', rows, vars(args))}")


if __name__ == "__main__":
    main()
