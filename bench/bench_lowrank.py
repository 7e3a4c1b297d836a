"""Low-rank benchmark on the bundled model: plain SVD vs activation-aware (SVD-LLM) vs reduced-order modelling.

    .venv/bin/python bench/bench_lowrank.py [--rows dense:0,plain:0.2,...] [--windows 40] [--calibration-windows 32]

Rows are ``method:setting``: ``dense:0``; ``plain|activation_aware|rom:<reduction>`` (svd_lowrank with
that target_reduction); ``share:<n>`` (share_layers with n layers reusing another's weights); ``share_c64:<n>`` (the same with a
rank-64 per-layer correction fitted to the layers' outputs).

Every row runs in its own child process on a freshly loaded SmolLM2-135M, so its peak RSS is its
own.  Calibration: 32×512 windows of bundled:wiki-calibration; perplexity: 40×512 windows of the
held-out bundled:wiki-evaluation.  ``factorize s`` is the whole step (calibration included);
``s/layer`` is the factorization of one Linear alone.  ``RSS during`` is the highest resident
memory sampled while the step runs (``peak RSS`` covers the whole process, loading and evaluation
included), to compare with the dense model's bytes in memory.  ``anon`` columns count only the
memory the process allocated itself (RssAnon), not the pages of the memory-mapped weight files.  ``RSS runtime`` is the process
after importing Python, torch and transformers, before the model; ``during − runtime`` is what the
model and the method hold at the step's peak (issue 3's target: under 2× the model in memory).  Size on disk is the saved folder's
weight files in the ``factorized`` format.  Decode tokens/s: ``core.eval.speed.measure_speed``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    add_window_arguments,
    current_anon_mb,
    current_rss_mb,
    peak_rss_mb,
    print_table,
    run_child_checked,
    write_results,
)

DEFAULT_ROWS = ["dense:0"] + [f"{m}:{r}" for r in (0.2, 0.4, 0.1) for m in ("plain", "activation_aware", "rom")] \
    + [f"share:{n}" for n in (2, 4, 8)] + [f"share_c64:{n}" for n in (2, 4, 8)]
COLUMNS = [("method", "method", ""), ("target", "target", ".2g"), ("reduction", "achieved", ".1%"),
           ("params_m", "params M", ".1f"), ("perplexity", "perplexity", ".2f"), ("disk_mb", "disk MB", ".0f"),
           ("factorize_s", "factorize s", ".1f"),
           ("factorize_cpu_s", "factorize CPU s", ".1f"), ("s_per_layer", "s/layer", ".3f"),
           ("rss_runtime_mb", "RSS runtime MB", ".0f"), ("rss_loaded_mb", "RSS loaded MB", ".0f"),
           ("rss_during_mb", "RSS during MB", ".0f"), ("rss_model_and_step_mb", "during − runtime MB", ".0f"),
           ("anon_model_and_step_mb", "anon during − runtime MB", ".0f"),
           ("peak_rss_mb", "peak RSS MB", ".0f"),
           ("memory_mb", "model in memory MB", ".0f"), ("decode_tps", "decode tok/s", ".1f")]


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class RssSampler:
    """Highest current RSS (MB) seen while the ``with`` block runs, sampled every 20 ms from /proc."""

    def __enter__(self):
        import threading

        self.peak, self.peak_anon, self._stop = 0.0, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_mb())
            self.peak_anon = max(self.peak_anon, current_anon_mb())
            self._stop.wait(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_one(method: str, target: float, args: argparse.Namespace) -> dict:
    """Load the model, factorize with one method at one target, measure; return the row."""
    import transformers.models.llama.modeling_llama  # noqa: F401  (the runtime, before the model)

    from core.data.texts import load_texts, token_windows
    from core.engine.params import config_from_dict
    from core.engine.recipe import DataSpec, Recipe
    from core.engine.registry import get_technique
    from core.engine.runner import RunContext
    from core.eval.perplexity import perplexity
    from core.eval.speed import measure_speed
    from core.events import drain
    from core.io.saving import save_model
    from core.models.loading import load_model
    from core.models.model_info import bytes_in_memory, folder_weight_bytes, inspect_model

    runtime_mb, runtime_anon_mb = current_rss_mb(), current_anon_mb()
    loaded = load_model("bundled:smollm2-135m")
    model, tokenizer = loaded.model, loaded.tokenizer
    row: dict = {"method": method, "target": target, "memory_mb": bytes_in_memory(model) / 1e6,
                 "rss_runtime_mb": runtime_mb, "rss_loaded_mb": current_rss_mb()}
    if method != "dense":
        if method.startswith("share"):
            info = get_technique("share_layers")
            params = {"num_shared": int(target), "score_windows": min(8, args.calibration_windows)}
            if method.startswith("share_c"):  # share_c64: with a rank-64 correction fitted to outputs
                params["correction_rank"] = int(method.removeprefix("share_c"))
        else:
            info = get_technique("svd_lowrank")
            params = {"method": method, "target_reduction": target, "allocation": args.allocation}
        config = config_from_dict(info.config_cls, params)
        recipe = Recipe(data=DataSpec(sequence_length=args.sequence_length,
                                      calibration_windows=args.calibration_windows))
        ctx = RunContext(recipe, tokenizer, "cpu")
        started, cpu = time.perf_counter(), _cpu_seconds()
        with RssSampler() as rss:
            report = drain(info.handler(model, config, ctx))
        row["rss_during_mb"] = rss.peak
        # What the model and the method hold at the step's peak: the peak less Python, torch and transformers.
        row["rss_model_and_step_mb"] = rss.peak - runtime_mb
        # The same without the pages of the memory-mapped weight files: what the process allocated.
        row["anon_model_and_step_mb"] = rss.peak_anon - runtime_anon_mb
        row["factorize_s"] = time.perf_counter() - started
        row["factorize_cpu_s"] = _cpu_seconds() - cpu
        row["rss_factorize_mb"] = peak_rss_mb()
        row["reduction"] = report.metrics["reduction"]
        row["s_per_layer"] = report.metrics.get("seconds_per_layer")
        row["layers_kept_dense"] = report.metrics.get("layers_kept_dense")
    row["params_m"] = inspect_model(model, with_layers=False).parameters / 1e6
    with tempfile.TemporaryDirectory() as folder:
        saved = save_model(model, tokenizer, Path(folder) / "out")
        row["disk_mb"] = folder_weight_bytes(saved) / 1e6
    windows = token_windows(load_texts("bundled:wiki-evaluation"), tokenizer, args.sequence_length,
                            args.windows or None)
    started = time.perf_counter()
    row["perplexity"] = perplexity(model, windows).perplexity
    row["eval_s"] = time.perf_counter() - started
    row["decode_tps"] = measure_speed(model, tokenizer, prompt_tokens=128, new_tokens=32, repeats=3).decode_tokens_per_s
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def main() -> None:
    """Run every row in its own child process, print the table, write bench/results/lowrank.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_arguments(parser, calibration=32, windows=40, sequence_length=512)
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="comma-separated method:setting")
    parser.add_argument("--allocation", default="uniform", choices=("uniform", "energy", "sensitivity"))
    parser.add_argument("--only", help=argparse.SUPPRESS)  # child process: "method:target"
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        method, target = args.only.split(":")
        Path(args.json_out).write_text(json.dumps(run_one(method, float(target), args)))
        return

    from core.models.loading import load_model

    load_model("bundled:smollm2-135m")  # convert the GGUF into the cache once, outside the timings
    jobs = [(row.split(":")[0].strip(), float(row.split(":")[1])) for row in args.rows.split(",")]
    rows = []
    for method, target in jobs:
        rows.append(run_child_checked(__file__, [
            "--only", f"{method}:{target}", "--calibration-windows", str(args.calibration_windows),
            "--windows", str(args.windows), "--sequence-length", str(args.sequence_length),
            "--allocation", args.allocation]))
        print(json.dumps(rows[-1]), flush=True)
        settings = {k: v for k, v in vars(args).items() if k not in ("only", "json_out")}
        settings.update(model="bundled:smollm2-135m", calibration="bundled:wiki-calibration",
                        evaluation="bundled:wiki-evaluation")
        write_results("lowrank", rows, settings)  # after every row, so a partial run still leaves results
    print()
    print_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
