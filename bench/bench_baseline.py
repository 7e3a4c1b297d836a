"""Baseline benchmark of the bundled model: load time, perplexity, speed, peak memory.

    .venv/bin/python bench/bench_baseline.py [--windows 40] [--sequence-length 512]

Loads SmolLM2-135M twice (a cold GGUF conversion into an empty cache, then from the cache),
measures perplexity on the held-out evaluation text, prefill latency and decode tokens/s, and
the process's peak RSS.  Later benchmarks add rows for compressed models next to this one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_window_arguments, peak_rss_mb, print_table, timed, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_arguments(parser, calibration=None, windows=40, sequence_length=512)
    args = parser.parse_args()

    from core import paths
    from core.data.perplexity_windows import perplexity_windows
    from core.data.texts import load_texts, token_windows
    from core.eval.perplexity import perplexity
    from core.eval.speed import measure_speed
    from core.models.loading import load_model
    from core.models.model_info import inspect_model

    row: dict = {"model": "SmolLM2-135M (bundled GGUF)"}
    with tempfile.TemporaryDirectory() as cold_cache:
        os.environ[paths.CACHE_ENV] = cold_cache
        with timed(row, "load_cold_s"):
            load_model("bundled:smollm2-135m")
        with timed(row, "load_cached_s"):
            loaded = load_model("bundled:smollm2-135m")
    summary = inspect_model(loaded.model, loaded.source_path, with_layers=False)
    windows = token_windows(load_texts("bundled:wiki-evaluation"), loaded.tokenizer, args.sequence_length,
                            args.windows or None)
    ppl = perplexity(loaded.model, windows)
    # the same text counted as lm-eval and llama.cpp count it (core.data.perplexity_windows)
    for convention in ("lm-eval", "llama.cpp"):
        cut = perplexity_windows(load_texts("bundled:wiki-evaluation"), loaded.tokenizer, args.sequence_length,
                                 args.windows or None, convention)
        row[f"perplexity_{convention.replace('-', '_').replace('.', '_')}"] = perplexity(loaded.model, cut).perplexity
    speed = measure_speed(loaded.model, loaded.tokenizer)
    row.update(params_m=summary.parameters / 1e6, disk_mb=summary.bytes_on_disk / 1e6,
               memory_mb=summary.bytes_in_memory / 1e6, perplexity=ppl.perplexity, eval_tokens=ppl.tokens,
               eval_s=ppl.seconds, prefill_ms=speed.prefill_ms, decode_tok_s=speed.decode_tokens_per_s,
               peak_rss_mb=peak_rss_mb())
    rows = [row]
    print_table(rows, [("model", "model", ""), ("load_cold_s", "load cold s", ".1f"),
                       ("load_cached_s", "load cached s", ".1f"), ("params_m", "params M", ".1f"),
                       ("disk_mb", "disk MB", ".1f"), ("memory_mb", "memory MB", ".1f"),
                       ("perplexity", "perplexity", ".3f"), ("eval_tokens", "eval tokens", "d"),
                       ("eval_s", "eval s", ".1f"), ("prefill_ms", "prefill ms", ".1f"),
                       ("decode_tok_s", "decode tok/s", ".1f"), ("peak_rss_mb", "peak RSS MB", ".0f")])
    path = write_results("baseline", rows, vars(args))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
