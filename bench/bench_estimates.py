"""Is the Pipeline page's pre-flight estimate right?  Each causal-LM preset, estimated, then really run.

    .venv/bin/python bench/bench_estimates.py [--windows 4] [--calibration-windows 8] [--presets gptq-4bit-laptop,...]

For every preset in ``resources/presets/*.yaml`` whose model is a causal LM (the MiniLM classifier
preset is left out: it is a sequence-classification recipe with no perplexity or calibration
windows, and its steps' estimate is a rough guess by design) on the bundled SmolLM2-135M:

1. this process holds the loaded model, as the app's Model page does, and times one forward pass with
   :func:`core.engine.throughput.measure_throughput` (the probe the app takes when a model loads);
2. :func:`core.engine.estimate.estimate` gives the parameters, output size, peak memory and time (per
   phase) of the recipe, told that the original's measurements are not kept (each run measures it);
3. a fresh process runs the recipe with the real runner (``core.engine.runner.run_recipe``), with an
   empty app data folder (nothing kept from earlier runs) but the usual caches and datasets, and reports
   the saved folder's weight bytes, the parameters, each phase's time (from the runner's stage events)
   and its peak memory: the peak resident memory during the run above what the process held just
   before it (torch and transformers imported).

To keep the runs short on a busy 2-core machine, ``--windows`` and ``--calibration-windows`` cap the
presets' evaluation and calibration windows; the estimate is of the capped recipe, i.e. of exactly what
runs.  Bands: output size and peak memory within 25%, time within 2×.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, provenance, run_child, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "resources" / "presets"
MODEL = "bundled:smollm2-135m"
SIZE_BAND = 0.25
TIME_BAND = 2.0


def capped_recipe(path: Path, windows: int, calibration_windows: int):
    """The preset's recipe with evaluation and calibration windows capped (never raised)."""
    from core.engine.recipe import load_recipe

    recipe = load_recipe(path)
    evaluation = recipe.evaluation
    if windows:
        evaluation.max_windows = min(evaluation.max_windows or windows, windows)
    if calibration_windows:
        recipe.data.calibration_windows = min(recipe.data.calibration_windows, calibration_windows)
    return recipe


def _status_lines():
    with open("/proc/self/status") as status:
        return {line.split(":")[0]: line.split(":", 1)[1].strip() for line in status}


def _kb(value: str) -> float:
    return int(value.split()[0]) * 1024


def child(args: argparse.Namespace) -> dict:
    """Run one recipe with the real runner in this (fresh) process; measure time per phase, memory, size."""
    import transformers.models.llama.modeling_llama  # noqa: F401

    import core.engine.runner  # noqa: F401  (imported before the baseline memory is read)
    from core.engine.recipe import Recipe
    from core.engine.runner import run_recipe
    from core.events import StageStarted

    recipe = Recipe.from_dict(json.loads(Path(args.recipe_json).read_text()))
    with open("/proc/self/clear_refs", "w") as refs:  # restart the peak (VmHWM) from now
        refs.write("5")
    before = _kb(_status_lines()["VmRSS"])
    starts: list[tuple[str, float]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        job = run_recipe(recipe, Path(folder) / "out", device="cpu")
        try:
            while True:
                event = next(job)
                if isinstance(event, StageStarted):
                    starts.append((event.stage, time.perf_counter()))
        except StopIteration as done:
            report = done.value
    ended = time.perf_counter()
    peak = _kb(_status_lines()["VmHWM"])
    names = {"load": "load", "measure_before": "measure original", "measure_after": "measure result", "save": "save"}
    phases, step = [], 0
    for index, (stage, at) in enumerate(starts):
        until = starts[index + 1][1] if index + 1 < len(starts) else ended
        if stage == "step":
            step += 1
            name = f"step {step}: {report['steps'][step - 1]['technique']}"
        else:
            name = names.get(stage, stage)
        phases.append([name, until - at])
    after = report["after"]
    return {"seconds": ended - started, "phases": phases, "peak_bytes": peak - before,
            "output_bytes": after["bytes_on_disk"], "output_parameters": after["parameters"],
            "output_nonzero": after["nonzero_parameters"], "output_dtype": report["output"]["dtype"],
            "perplexity_after": after.get("perplexity", {}).get("perplexity")}


def within(estimated: float, measured: float, band: float, ratio: bool = False) -> bool:
    if not measured:
        return False
    if ratio:
        return 1 / band <= estimated / measured <= band
    return abs(estimated / measured - 1) <= band


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=4, help="cap on evaluation windows (0 = the preset's)")
    parser.add_argument("--calibration-windows", type=int, default=8, help="cap on calibration windows (0 = the preset's)")
    parser.add_argument("--presets", default="", help="comma-separated preset file names (default: all causal-LM)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--recipe-json", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        Path(args.json_out).write_text(json.dumps(child(args)))
        return

    started = provenance()
    from core.engine.estimate import estimate
    from core.engine.recipe import load_recipe
    from core.engine.throughput import measure_throughput
    from core.events import drain
    from core.models.loading import iter_load_model
    from core.models.model_info import inspect_model
    from core.paths import cache_dir, datasets_dir

    loaded = drain(iter_load_model(MODEL, "causal-lm", False, "cpu"))
    summary = inspect_model(loaded.model, loaded.source_path)
    wanted = {name.strip().removesuffix(".yaml") for name in args.presets.split(",") if name.strip()}
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as homes:
        env = {"COMPRESSION_STUDIO_CACHE": str(cache_dir()), "COMPRESSION_STUDIO_DATA": str(datasets_dir())}
        for path in sorted(PRESETS.glob("*.yaml")):
            if wanted and path.stem not in wanted:
                continue
            if load_recipe(path).model.task != "causal-lm":
                skipped.append(path.stem)
                continue
            recipe = capped_recipe(path, args.windows, args.calibration_windows)
            recipe.model.source = MODEL
            probe = measure_throughput(loaded.model, summary.parameters, "cpu")
            est = estimate(summary, recipe, "cpu", None, throughput=probe, original_kept=False)
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                handle.write(json.dumps(recipe.to_dict()))
            env["COMPRESSION_STUDIO_HOME"] = str(Path(homes) / path.stem)  # nothing kept from an earlier preset's run
            saved_env = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                real = run_child(Path(__file__), ["--child", "--recipe-json", handle.name])
            finally:
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                Path(handle.name).unlink(missing_ok=True)
            if "error" in real:
                raise SystemExit(f"{path.stem}: {real['error']}")
            row = {"preset": path.stem, "steps": ", ".join(s.technique for _, s in recipe.enabled_steps()),
                   "windows": recipe.evaluation.max_windows, "calibration_windows": recipe.data.calibration_windows,
                   "sequence_length": recipe.data.sequence_length, "probe_s_per_token": probe.seconds_per_token,
                   "est_parameters": est.output_parameters, "parameters": real["output_parameters"],
                   "est_nonzero": est.output_nonzero, "nonzero": real["output_nonzero"],
                   "est_output_bytes": est.output_bytes, "output_bytes": real["output_bytes"],
                   "est_output_format": est.output_dtype, "saved_float_dtype": real["output_dtype"],
                   "est_peak_bytes": est.peak_bytes, "peak_bytes": real["peak_bytes"],
                   "est_seconds": est.seconds, "seconds": real["seconds"],
                   "est_phases": [[n, s] for n, s in est.phase_seconds], "phases": real["phases"],
                   "perplexity_after": real["perplexity_after"]}
            row["size_ok"] = within(est.output_bytes, real["output_bytes"], SIZE_BAND)
            row["peak_ok"] = within(est.peak_bytes, real["peak_bytes"], SIZE_BAND)
            row["time_ok"] = within(est.seconds, real["seconds"], TIME_BAND, ratio=True)
            row["parameters_ok"] = est.output_parameters == real["output_parameters"]
            rows.append(row)
            print(f"{path.stem}: estimated {est.seconds:.0f} s, took {real['seconds']:.0f} s; "
                  f"phases est {[(n, round(s)) for n, s in est.phase_seconds]} real "
                  f"{[(n, round(s)) for n, s in real['phases']]}", flush=True)

    print_table([{**r, "size_mb": r["output_bytes"] / 1e6, "est_size_mb": r["est_output_bytes"] / 1e6,
                  "peak_mb": r["peak_bytes"] / 1e6, "est_peak_mb": r["est_peak_bytes"] / 1e6} for r in rows],
                [("preset", "preset", ""), ("est_size_mb", "est MB", ".1f"), ("size_mb", "saved MB", ".1f"),
                 ("est_peak_mb", "est peak MB", ".0f"), ("peak_mb", "peak MB", ".0f"),
                 ("est_seconds", "est s", ".0f"), ("seconds", "run s", ".0f"),
                 ("size_ok", "size ok", ""), ("peak_ok", "peak ok", ""), ("time_ok", "time ok", "")])
    if skipped:
        print(f"skipped (not causal-LM): {', '.join(skipped)}")
    settings = {"model": MODEL, "windows_cap": args.windows, "calibration_windows_cap": args.calibration_windows,
                "size_band": SIZE_BAND, "time_band": TIME_BAND, "skipped": skipped, "device": "cpu"}
    write_results("estimates", rows, settings, started)


if __name__ == "__main__":
    main()
