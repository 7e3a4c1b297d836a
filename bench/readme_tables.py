"""Write the README's measured tables from the committed benchmark results in ``bench/results/``.

    .venv/bin/python bench/readme_tables.py           # rewrite the tables in README.md
    .venv/bin/python bench/readme_tables.py --check   # exit 1 if a table differs from its result file

Each table sits in README.md between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; NAME picks a
renderer below, which reads ``bench/results/<file>.json`` (written by the benchmark named in the
table's source line) and prints the table with the date, machine and commit of the run.  No number in
these tables is typed by hand: re-run the benchmark, then this script.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
MARKER = re.compile(r"(<!-- bench:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S)


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"error: {path.relative_to(ROOT)} is missing; run the benchmark that writes it first")
    return json.loads(path.read_text())


def source_line(result_names: list[str], scripts: list[str]) -> str:
    """Where the numbers come from: scripts, result files, and each run's date, machine and commit."""
    runs = []
    for name in result_names:
        result = load(name)
        machine = result.get("machine", {})
        cores = machine.get("cores") or machine.get("cpu_threads")
        where = f"{machine.get('cpu', 'unknown CPU')}, {cores} cores" if cores else machine.get("cpu", "unknown CPU")
        commit = result.get("commit", "unknown")
        if result.get("dirty"):
            commit += " with uncommitted changes"
        runs.append(f"`bench/results/{name}.json` ({result.get('date', 'undated')}, {where}, commit {commit})")
    scripts_text = ", ".join(f"`{s}`" for s in scripts)
    return f"*Measured by {scripts_text}; written from {'; '.join(runs)}.*\n\n"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def by_key(rows: list[dict], key: str) -> dict[str, dict]:
    return {row[key]: row for row in rows}


def num(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "—"
    return format(value, spec)


def ppl(value: float | None) -> str:
    """A perplexity with about four significant figures (and thousands separators when huge)."""
    if value is None:
        return "—"
    if value >= 1_000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}"


# ----------------------------------------------------------------------------------------- tables
def baseline() -> str:
    row = load("baseline")["rows"][0]
    body = [[row["model"], f"{row['load_cold_s']:.1f}", f"{row['load_cached_s']:.1f}", f"{row['params_m']:.1f} M",
             f"{row['disk_mb']:.1f}", f"{row['memory_mb']:.1f}", f"{row['perplexity']:.3f}",
             num(row.get("perplexity_lm_eval"), ".3f"), num(row.get("perplexity_llama_cpp"), ".3f"),
             f"{row['decode_tok_s']:.1f}", f"{row['peak_rss_mb']:,.0f}"]]
    return source_line(["baseline"], ["bench/bench_baseline.py"]) + table(
        ["model", "first load s (converts the GGUF)", "later loads s", "parameters", "disk MB", "in memory MB",
         "perplexity", "… counted as lm-eval", "… counted as llama.cpp", "decode tokens/s", "peak RSS MB"], body)


def prune() -> str:
    rows = by_key(load("prune")["rows"], "method")
    order = ["dense", "magnitude 50%", "Wanda 50%", "SparseGPT 50%", "Wanda 2:4", "SparseGPT 2:4",
             "Wanda 50% OWL", "Wanda 70%", "Wanda 70% OWL"]
    body = [[name, f"{rows[name]['nonzero_m']:.1f} M", ppl(rows[name]["perplexity"]),
             f"{rows[name]['prune_s']:.0f} s" if rows[name].get("prune_s") else "—"]
            for name in order if name in rows]
    return source_line(["prune"], ["bench/bench_prune.py"]) + table(
        ["method", "non-zero params", "perplexity", "wall time"], body)


def prune_peers() -> str:
    rows = load("prune_peers")["rows"]
    methods = list(dict.fromkeys(row["method"] for row in rows))
    body = []
    for method in methods:
        peers = {row["peer"]: row for row in rows if row["method"] == method}
        first = next(iter(peers.values()))
        cells = [method, f"{first['ours_ppl']:.2f} ({first['ours_s']:.0f} s)"]
        ratios = []
        for peer in ("llmcompressor", "torchao"):
            row = peers.get(peer)
            if row is None or row.get("error"):
                cells.append("—" if row is None else "failed")
                ratios.append("—")
            else:
                cells.append(f"{row['peer_ppl']:.2f} ({row['peer_s']:.0f} s)")
                ratios.append(f"{row['ppl_ratio']:.3f}, {row['time_ratio']:.2f}")
        body.append(cells + ratios)
    text = table(["method", "ours", "llm-compressor", "torchao", "ours/llm-compressor: perplexity, time",
                  "ours/torchao: perplexity, time"], body)
    found = next((row for row in rows if row.get("ours_detail", {}).get("sparse_bytes")), None)
    if found:
        detail = found["ours_detail"]
        text += (f"\nOur {found['method']} result saved in the sparse-bitmask format: "
                 f"{detail['sparse_bytes'] / 1e6:.0f} MB instead of {detail['dense_bytes'] / 1e6:.0f} MB dense; "
                 f"reloaded logits identical: {'yes' if detail.get('reload_identical') else 'no'}.\n")
    return source_line(["prune_peers"], ["bench/bench_prune_peers.py"]) + text


def structured() -> str:
    rows = load("structured")["rows"]
    body = [[row["method"].replace("-", "−"), f"{row['params_m']:.1f} M", ppl(row["perplexity"]),
             f"{row['decode_tokens_per_s']:.1f}", f"{row['speedup']:.2f}×", f"{row['bound']:.2f}×"]
            for row in rows]
    return source_line(["structured"], ["bench/bench_structured.py"]) + table(
        ["method", "params", "perplexity", "decode tokens/s", "speed-up", "memory-bound limit"], body)


QUANT_LABELS = {
    "unquantized": "unquantized (float32)",
    "RTN 8-bit g64": "RTN 8-bit g64",
    "dynamic int8": "dynamic int8 (W8A8, SmoothQuant α 0.75)",
    "dynamic int8 no smoothing": "dynamic int8 without smoothing",
    "bnb int8": "bitsandbytes int8 (LLM.int8)",
    "RTN 4-bit g64 asym": "RTN 4-bit g64 asymmetric",
    "GPTQ 4-bit g64 asym act": "GPTQ 4-bit g64 asymmetric, act-order",
    "GPTQ+MSE 4-bit g64 asym act": "**GPTQ+MSE 4-bit g64 asymmetric, act-order** (preset \"4-bit for a laptop\")",
    "bnb nf4": "bitsandbytes NF4",
    "Mixed GPTQ+MSE 3..8 g64 asym act avg 4.56": "mixed GPTQ+MSE 3…8 bits by sensitivity, average 4.56",
    "Mixed GPTQ+MSE 4/8 g64 asym act avg 5.0": "mixed GPTQ+MSE 4/8 bits by sensitivity, average 5.0",
    "RTN 3-bit g64 asym": "RTN 3-bit g64 asymmetric",
    "GPTQ+MSE 3-bit g64 asym act": "**GPTQ+MSE 3-bit g64 asymmetric, act-order**",
}
QUANT_SYMMETRIC = {
    "RTN 4-bit g64": "RTN 4-bit g64 symmetric",
    "GPTQ 4-bit g64": "GPTQ 4-bit g64 symmetric",
    "GPTQ 4-bit g64 static": "GPTQ 4-bit g64 symmetric, static groups",
    "GPTQ 4-bit g64 act": "GPTQ 4-bit g64 symmetric, act-order",
    "GPTQ 4-bit g64 asym act": "… with a zero point per group (asymmetric)",
    "GPTQ+MSE 4-bit g64 asym act": "… and MSE-fitted group ranges",
}


def quant() -> str:
    rows = by_key(load("quant")["rows"], "method")
    base = rows["unquantized"]["perplexity"]
    body = []
    for name, label in QUANT_LABELS.items():
        if name not in rows:
            continue
        row = rows[name]
        value = row["perplexity"]
        shown = f"{value:.3f} ({value / base - 1:+.2%})" if row.get("bits") == 8 else f"{value:.3f}"
        disk = f"{row['disk_mb']:.1f}" + (" (float file)" if name.startswith("dynamic") else "")
        body.append([label, num(row.get("layer_bits", 32.0)), disk, f"{row['memory_mb']:.1f}", shown,
                     num(row["quant_s"], ".1f") if row.get("quant_s") else "—", f"{row['peak_rss_mb']:,.0f}"])
    return source_line(["quant"], ["bench/bench_quant.py"]) + table(
        ["method", "bits/weight (quantized layers)", "disk MB", "in memory MB", "perplexity", "quantize s",
         "peak RSS MB"], body)


def quant_ingredients() -> str:
    rows = by_key(load("quant")["rows"], "method")
    body = [[label, f"{rows[name]['perplexity']:.3f}", num(rows[name].get("layer_bits"))]
            for name, label in QUANT_SYMMETRIC.items() if name in rows]
    return source_line(["quant"], ["bench/bench_quant.py"]) + table(
        ["4-bit, groups of 64", "perplexity", "bits/weight"], body)


PEER_LABELS = {
    "unquantized": "unquantized (float32)",
    "ours GPTQ 4-bit g64 asym act": "ours GPTQ 4-bit g64, asym, act-order",
    "hqq 4-bit g64": "HQQ 4-bit g64",
    "bnb nf4": "bitsandbytes NF4",
    "ours bnb nf4": "ours bitsandbytes NF4 (through the step)",
    "torchao int4 g64 asym": "torchao int4 g64 asymmetric (`IntxWeightOnlyConfig`)",
    "ours RTN 4-bit g64 asym": "ours RTN 4-bit g64 asym",
    "quanto int4": "optimum-quanto int4 (its own groups: 96 or 128)",
    "ours GPTQ+MSE 3-bit g64 asym act": "**ours GPTQ+MSE 3-bit g64, asym, act-order**",
    "torchao int3 g64 asym": "torchao int3 g64 asymmetric",
    "hqq 3-bit g64": "HQQ 3-bit g64",
    "torchao int8 wo": "torchao int8 weight-only",
    "quanto int8": "optimum-quanto int8",
    "hqq 8-bit": "HQQ 8-bit",
    "bnb int8": "bitsandbytes int8",
    "ours bnb int8": "ours bitsandbytes int8 (through the step)",
    "torchao int8 dyn": "torchao W8A8 dynamic (`Int8DynamicActivationInt8WeightConfig`, same layers as ours)",
    "ours dynamic int8 no smoothing": "ours dynamic int8 without smoothing (the same scheme as torchao's W8A8)",
    "ours dynamic int8": "ours dynamic int8 (SmoothQuant α 0.75)",
}


def quant_peers() -> str:
    result = load("quant_peers")
    rows = by_key(result["rows"], "method")
    base = rows["unquantized"]["perplexity"]
    ratios: dict[str, list[str]] = {}  # peer -> "ours row: ours/peer perplexity"
    for row in result["rows"]:
        found = re.fullmatch(r"ratio (.+) / (.+) \(perplexity\)", row["method"])
        if found:
            ours = PEER_LABELS.get(found.group(1), found.group(1)).strip("*").removeprefix("ours ")
            ratios.setdefault(found.group(2), []).append(f"{ours.split(' (')[0]} {row['perplexity']:.3f}")
    body = []
    for name, label in PEER_LABELS.items():
        row = rows.get(name)
        if row is None:
            continue
        if row.get("error"):
            body.append([label, "failed: " + row["error"].splitlines()[0][:60], "—", "—", ""])
            continue
        value = row["perplexity"]
        shown = f"{value:.3f} ({value / base - 1:+.2%})" if value < base * 1.05 else f"{value:.3f}"
        body.append([label, shown, num(row.get("quantize_s"), ".1f") if row.get("quantize_s") else "—",
                     f"{row['memory_mb']:.1f}", "; ".join(ratios.get(name, []))])
    return source_line(["quant_peers"], ["bench/bench_quant_peers.py"]) + table(
        ["method", "perplexity", "quantize s", "in memory MB", "ours / peer"], body)


DECODE_LABELS = {"dense": "float32", "RTN 4-bit g64 asym": "RTN/GPTQ 4-bit g64 (int4 kernel)",
                 "dynamic int8": "dynamic int8 (W8A8)", "bnb int8": "bitsandbytes int8", "bnb nf4": "bitsandbytes NF4",
                 "RTN 8-bit g64": "RTN/GPTQ 8-bit g64 (no kernel: dequantized at every call)",
                 "SVD -10%": "low-rank −10%", "SVD -20%": "low-rank −20%", "SVD -40%": "low-rank −40%"}


def decode() -> str:
    rows = by_key(load("decode")["rows"], "row")
    body = [[label, f"{rows[name]['params_m']:.1f} M", f"{rows[name]['decode_tok_s']:.1f}",
             f"{rows[name]['speedup']:.2f}", f"{rows[name]['spread']:.0%}"]
            for name, label in DECODE_LABELS.items() if name in rows]
    return source_line(["decode"], ["bench/bench_decode.py"]) + table(
        ["model", "parameters", "decode tokens/s", "× float32", "spread of rounds (max − min) / median"], body)


LOWRANK_LABELS = {"dense": "dense (float32)", "plain": "plain SVD", "activation_aware": "activation-aware (SVD-LLM)",
                  "rom": "reduced-order model (output PCA)", "share": "share {n} layers",
                  "share_c64": "share {n} + rank-64 correction"}


def lowrank() -> str:
    rows = load("lowrank")["rows"]

    def order(row):
        kind = {"dense": 0, "plain": 1, "activation_aware": 1, "rom": 1, "share": 2, "share_c64": 3}[row["method"]]
        inner = {"plain": 0, "activation_aware": 1, "rom": 2}.get(row["method"], 0)
        return kind, row["target"], inner

    body = []
    for row in sorted(rows, key=order):
        label = LOWRANK_LABELS[row["method"]].format(n=int(row["target"]))
        fewer = f"{row['reduction']:.1%}" if row.get("reduction") is not None else "—"
        body.append([label, fewer, f"{row['params_m']:.1f} M", ppl(row["perplexity"]), f"{row['disk_mb']:.0f}",
                     num(row.get("factorize_s"), ".1f"), num(row.get("s_per_layer"), ".3f"),
                     num(row.get("anon_model_and_step_mb"), ".0f"), num(row.get("rss_model_and_step_mb"), ".0f")])
    return source_line(["lowrank"], ["bench/bench_lowrank.py"]) + table(
        ["method", "fewer", "params", "perplexity", "disk MB", "factorize s", "s per Linear", "allocated MB",
         "resident MB"], body)


def distill() -> str:
    result = load("distill")
    rows = result["rows"]
    text = ""
    causal = [row for row in rows if "perplexity" in row]
    if causal:
        text += table(["causal LM", "parameters", "perplexity", "wall s", "gap closed"],
                      [[row["model"], f"{row['parameters'] / 1e6:.1f} M", ppl(row["perplexity"]),
                        num(row.get("wall_s"), ".0f"), num(row.get("gap_closed"), ".0%")] for row in causal])
    classify = [row for row in rows if "accuracy" in row]
    if classify:
        text += ("\n" if text else "") + table(
            ["classifier (Rotten Tomatoes test split)", "parameters", "accuracy", "macro F1", "MB", "× smaller"],
            [[row["model"], f"{row['parameters'] / 1e6:.1f} M", f"{row['accuracy']:.3f}", f"{row['macro_f1']:.3f}",
              f"{row['mb']:.1f}", f"{row['smaller_than_teacher']:.2f}"] for row in classify])
    return source_line(["distill"], ["bench/bench_distill.py"]) + text


def qat(name: str = "qat") -> str:
    """Issue 17: quantization-aware training against RTN / GPTQ+MSE and the float control, with its budget stated.

    "gap closed": the share of the starting PTQ row's held-out perplexity gap to the float model that training
    recovered, (PTQ − QAT) / (PTQ − float); the control's is its own gain over the float model.
    """
    result = load(name)
    settings = result["settings"]
    rows = result["rows"]
    by_name = {row["row"]: row for row in rows}
    float_ppl = by_name["float (original)"]["ppl_wiki"]

    def closed(row: dict) -> str:
        start = by_name.get(row["row"].removeprefix("QAT from ")) if row["row"].startswith("QAT from ") else None
        if start is None or start["ppl_wiki"] <= float_ppl:
            return "—"
        return f"{(start['ppl_wiki'] - row['ppl_wiki']) / (start['ppl_wiki'] - float_ppl):.0%}"

    body = [[row["row"], ppl(row["ppl_wiki"]), closed(row), ppl(row["ppl_reviews"]), f"{row['kl']:.3f}",
             num(row["wall_s"], ".0f"), f"{row['tokens']:,}", str(row["best_step"]) if "best_step" in row else "—"]
            for row in rows]
    scales = "learned" if settings["training"].get("learn_scales", True) else "fixed"
    budget = (f"Each trained row: {settings['steps']} steps × {settings['batch_size']} windows × "
              f"{settings['train_length']} tokens = {settings['tokens_per_training_row']:,} tokens of "
              f"bundled:wiki-calibration, drawn from {settings['train_windows']:,} windows (learning rate "
              f"{settings['lr']:g}, T = {settings.get('temperature', 2.0):g}, α = {settings.get('alpha', 0.5):g}, "
              f"QAT scales {scales}); evaluation {settings['evaluation']}; {settings['threads']} CPU thread(s) shared "
              "with other jobs, so wall times are of a busy machine.")
    if not settings.get("complete"):
        budget += " The run stopped before every row was measured: the missing rows have no result yet."
    text = (source_line([name], ["bench/bench_qat.py"])
            + table(["row", "perplexity held-out wiki", "gap to float closed", "perplexity reviews",
                     "KL to original", "wall s", "tokens trained", "step kept (0 = the start)"], body)
            + "\n" + budget + "\n")
    scored = [row for row in rows if "tasks" in row]
    if scored:
        names = list(scored[0]["tasks"])
        first = scored[0]["tasks"]
        header = ["row"] + [f"{TASK_TITLES.get(n, n)} ({first[n]['headline']})" for n in names] + ["average"]
        body = [[row["row"]] + [_accuracy(row["tasks"][n]) for n in names]
                + [f"{_headline_average(row['tasks']):.1%}"] for row in scored]
        counts = ", ".join(f"{TASK_TITLES.get(n, n)} {first[n]['n']:,} of {first[n]['rows_total']:,}" for n in names)
        text += ("\n" + table(header, body) + f"\nZero-shot task accuracy (lm-eval's scoring) on a seeded random "
                 f"subset of each task's questions, the same for every row ({counts}).\n")
    return text


def _headline_average(scores: dict) -> float:
    """The mean of each task's headline accuracy (acc for BoolQ, acc_norm for the others)."""
    return sum(_headline(score) for score in scores.values()) / len(scores)


def classify() -> str:
    """Issue 19: teacher and student test accuracy of the "Distil a small classifier" pipeline on two data sets."""
    rows = load("classify")["rows"]
    titles = {"reviews": "Rotten Tomatoes reviews (bundled sample)", "topics": "Wikipedia topics (bundled articles)"}
    return source_line(["classify"], ["bench/bench_classify.py"]) + table(
        ["data set", "classes", "examples (test)", "majority class", "teacher accuracy (6 layers)",
         "student accuracy", "student layers, parameters", "wall s"],
        [[titles.get(row["set"], row["set"]), str(row["classes"]), f"{row['examples']:,} ({row['test_examples']})",
          f"{row['chance']:.0%}", f"{row['teacher_accuracy']:.1%}", f"{row['student_accuracy']:.1%}",
          f"{row.get('student_layers', 3)}, {row['student_parameters'] / 1e6:.1f} M", f"{row['wall_s']:.0f}"]
         for row in rows])


TASK_TITLES = {"arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge", "piqa": "PIQA", "hellaswag": "HellaSwag",
               "boolq": "BoolQ"}


def _headline(score: dict) -> float:
    return score["acc"] if score["headline"] == "acc" else score["acc_norm"]


def _accuracy(score: dict) -> str:
    value = _headline(score)
    return f"{value:.1%} ± {score['stderr']:.1%}" if score.get("stderr") is not None else f"{value:.1%}"


def tasks(name: str = "tasks") -> str:
    """Zero-shot task accuracy per model (``tasks``: a seeded subset; ``tasks_full``: every question, resumable)."""
    result = load(name)
    rows, names = result["rows"], result["settings"]["tasks"]
    first = rows[0]["tasks"]
    header = ["model"] + [f"{TASK_TITLES.get(n, n)} ({first[n]['headline']})" for n in names] + [
        "average", "compress s", "scoring s"]
    body = [[row["model"]] + [_accuracy(row["tasks"][n]) for n in names]
            + [f"{row['average']:.1%}", num(row.get("compress_s"), ".0f"), num(row.get("scoring_s"), ".0f")]
            for row in rows]
    counts = ", ".join(f"{TASK_TITLES.get(n, n)} {first[n]['n']:,} of {first[n]['rows_total']:,}" for n in names)
    subset = any(first[n]["n"] < first[n]["rows_total"] for n in names)
    note = (f" (a random subset, seed {result['settings']['seed']}, the same for every model)" if subset else "")
    return (source_line([name], ["bench/bench_tasks.py"]) + table(header, body)
            + f"\nQuestions scored per task: {counts}{note}.\n")


def tasks_speed() -> str:
    result = load("tasks")
    speed = result["settings"]["speed"]
    body = [[TASK_TITLES.get(r["task"], r["task"]), str(r["questions"]), f"{r['lm_eval_s']:.1f}",
             f"{r['lm_eval_one_question_s']:.1f}", f"{r['ours_s']:.1f}", f"{r['ratio']:.2f}",
             "yes" if r["same_answers"] else "**no**", f"{r['max_loglikelihood_diff']:.1e}"] for r in speed]
    total_lm, total_ours = sum(r["lm_eval_s"] for r in speed), sum(r["ours_s"] for r in speed)
    body.append(["**all five**", str(sum(r["questions"] for r in speed)), f"{total_lm:.1f}",
                 f"{sum(r['lm_eval_one_question_s'] for r in speed):.1f}", f"{total_ours:.1f}",
                 f"**{total_ours / total_lm:.2f}**", "yes" if all(r["same_answers"] for r in speed) else "**no**",
                 f"{max(r['max_loglikelihood_diff'] for r in speed):.1e}"])
    return source_line(["tasks"], ["bench/bench_tasks.py"]) + table(
        ["task", "questions", "lm-eval s", "lm-eval s for one question", "ours s", "ours ÷ lm-eval",
         "same answer to every question", "largest log-likelihood difference"], body)


def estimates() -> str:
    """The pre-flight estimate next to the real run of each causal-LM preset (bench/bench_estimates.py)."""
    result = load("estimates")
    settings = result["settings"]

    def mb(value: float) -> str:
        return f"{value / 1e6:.0f}" if value >= 1e7 else f"{value / 1e6:.1f}"

    def mark(ok: bool) -> str:
        return "" if ok else " **✗**"

    body = []
    for r in result["rows"]:
        step = next((s for name, s in r["phases"] if name.startswith("step ")), 0.0)
        est_step = next((s for name, s in r["est_phases"] if name.startswith("step ")), 0.0)
        body.append([f"`{r['preset']}`", r["est_output_format"],
                     f"{r['est_parameters'] / 1e6:.1f} M / {r['parameters'] / 1e6:.1f} M",
                     f"{r['est_nonzero'] / 1e6:.1f} M / {r['nonzero'] / 1e6:.1f} M",
                     f"{mb(r['est_output_bytes'])} / {mb(r['output_bytes'])}{mark(r['size_ok'])}",
                     f"{mb(r['est_peak_bytes'])} / {mb(r['peak_bytes'])}{mark(r['peak_ok'])}",
                     f"{est_step:.0f} / {step:.0f}",
                     f"{r['est_seconds']:.0f} / {r['seconds']:.0f}{mark(r['time_ok'])}"])
    capped = (f" Evaluation windows capped at {settings['windows_cap']} and calibration windows at "
              f"{settings['calibration_windows_cap']} to keep the runs short; the estimate is of exactly those "
              "settings." if settings.get("windows_cap") or settings.get("calibration_windows_cap") else "")
    skipped = (f" Not run: {', '.join(f'`{s}`' for s in settings['skipped'])} (a sequence-classification "
               "recipe; its training steps' estimate is a rough guess)." if settings.get("skipped") else "")
    return (source_line(["estimates"], ["bench/bench_estimates.py"])
            + table(["preset", "stored as (estimated)", "parameters est / real", "non-zero est / real",
                     "saved MB est / real",
                     "peak MB est / real", "step s est / real", "run s est / real"], body)
            + f"\nBands: size and peak memory within {settings['size_band']:.0%}, time within "
              f"{settings['time_band']:.0f}×; **✗** marks a miss.{capped}{skipped}\n")


MODEL_TITLES = {"smollm2": "SmolLM2-135M (Llama, bundled)", "qwen2": "random Qwen2 (tied, 49k vocabulary)"}


def models() -> str:
    """Issue 20: every technique on two model families, both perplexity conventions, sizes, the shape error."""
    result = load("models")
    rows = result["rows"]
    body, errors, notes = [], [], []
    for row in rows:
        title = MODEL_TITLES.get(row["model"], row["model"])
        if "error" in row:
            when = "before loading" if row["before_loading"] else "**after loading**"
            errors.append(f"- {title}, {row['row']}: refused {when}, {row['error_after_s']:.1f} s into the run, "
                          f"nothing written: “{row['error']}”")
            continue
        size = f"{row['disk_bytes'] / 1e6:.1f}"
        if row["row"] == "original":
            versus = "the source file"
        else:
            change = row["disk_bytes"] / row["source_bytes"] - 1
            versus = f"{change:+.0%}" if row["smaller_than_source_file"] else f"**{change:+.0%}**"
            if row["compared_bytes"] != row["source_bytes"]:
                versus += f" ({row['disk_bytes'] / row['compared_bytes'] - 1:+.0%} vs 16-bit)"
        if row["row"] in ("original", "Wanda 50%"):
            embedding = "—"
        elif row["technique"] == "gguf_export":
            embedding = row["embedding_type"]
        elif row["technique"] == "bnb_quantize":
            embedding = "no (bitsandbytes cannot)"
        else:
            embedding = f"{row['params'].get('embedding_bits', 8)}-bit" if row["embedding_quantized"] else "no"
        body.append([title, row["row"], size, versus, embedding, ppl(row["ppl_transformers"]),
                     ppl(row["ppl_llama_cpp"]), f"{row['reference_gap']:.0e}"])
    first = {r["model"]: r for r in rows}
    for key, row in first.items():
        notes.append(f"{MODEL_TITLES.get(key, key)}: {row['parameters'] / 1e6:.1f} M parameters, of which the "
                     f"embedding {row['embedding_parameters'] / 1e6:.1f} M ({row['embedding_share']:.0%}); 16-bit size "
                     f"{row['bytes_as_16bit'] / 1e6:.1f} MB.")
    settings = result["settings"]
    if str(ROOT) not in sys.path:  # run as a script: bench/ is on the path, the repository root is not
        sys.path.insert(0, str(ROOT))
    from bench.bench_models import STEPS, checks  # the checks, on the rows as written

    problems = checks(rows)
    text = (source_line(["models"], ["bench/bench_models.py"])
            + table(["model", "result", "MB on disk", "vs the source's file", "embedding quantized",
                     "perplexity (transformers)",
                     "perplexity (llama.cpp)", "largest gap to the independent computation"], body)
            + "\n" + "\n".join(f"- {n}" for n in notes) + "\n" + "\n".join(errors) + "\n"
            + f"\nPerplexity on {settings['windows']} windows of {settings['sequence_length']} tokens "
              f"({settings['evaluation']}); GPTQ calibrated on {settings['calibration_windows']} windows. "
            + ("Every check held: both conventions within 0.1% of their independent computations, every reloaded "
               "folder scoring what the in-memory result scored, every row quantized with its embedding smaller "
               "than the source's file, the shape errors refused before loading." if not problems
               else "Checks that failed: " + "; ".join(problems) + ".") + "\n")
    if not settings.get("complete", True):
        expected = ["original", "GGUF Q4_0", "GGUF Q4_0, embedding kept (F16)"] + [name for name, _, _ in STEPS]
        missing = [f"{MODEL_TITLES.get(m, m)}: {name}" for m in settings["models"].split(",")
                   for name in expected if not any(r["model"] == m and r["row"] == name for r in rows)]
        text += ("\n**This run is not complete** (it is written row by row; `bench/bench_models.py --resume` "
                 "measures the rest)" + (f"; not measured yet: {', '.join(missing)}" if missing else "") + ".\n")
    return text


def distributed() -> str:
    """Issue 18: one recipe on one process and on two (torchrun, gloo), the same windows: the saved weights agree."""
    result = load("distributed")
    settings = result["settings"]
    body = [[row["method"], f"{row['max_abs_weight_difference']:.1e}", f"{row['share_moved_over_1e-3']:.2%}",
             f"{row['perplexity_one']:.3f}", f"{row['perplexity_two']:.3f}", num(row["seconds_one"], ".0f"),
             num(row["seconds_two"], ".0f")] for row in result["rows"]]
    note = (f"{settings['calibration_windows']} calibration windows of {settings['sequence_length']} tokens "
            f"(bundled:wiki-calibration), perplexity on {settings['eval_windows']} windows of bundled:wiki-evaluation; "
            "max |Δw| over every Linear as the saved model computes with it (packed layers dequantized); wall "
            "seconds of the whole command (load, measure, step, measure, save), one thread per process, with both "
            "processes on the same two shared cores, so no speed-up is expected here.")
    trained = next((row["params"] for row in result["rows"] if row["technique"] == "distill_causal_lm"), None)
    how = ("Wanda and GPTQ: each process calibrates on half the windows and the statistics are added up before "
           "each block is compressed; GPTQ's Hessian is a float64 sum of each window's product, which does not "
           "depend on which process added which window, so its rounding decisions are the same bits (the float32 "
           "running mean it replaced had let the two runs' roundings drift apart).")
    if trained:
        how += (f" Distillation ({trained['student_layers']}-layer student, {trained['max_steps']} steps, batches of "
                f"{trained['batch_size']} of {trained['train_windows']} training windows): each process takes half "
                "of every batch and DistributedDataParallel averages the gradients; the difference is the order of "
                "the float sums, which Adam's division by the gradients' running size enlarges where they are tiny.")
    return (source_line(["distributed"], ["bench/bench_distributed.py"])
            + table(["step", "max \\|Δw\\|", "weights moved > 1e-3", "perplexity, 1 process", "perplexity, 2 processes",
                     "s, 1 process", "s, 2 processes"], body) + "\n" + note + "\n\n" + how + "\n")


def gguf(name: str = "gguf") -> str:
    """Issue 22: llama.cpp's perplexity of each GGUF type, without and with our imatrix, and GPTQ-on-grid."""
    result = load(name)
    settings = result["settings"]
    rows = [[row["type"], num(row["mb"], ".1f"), ppl(row["ppl"]), ppl(row.get("ppl_imatrix")),
             ppl(row.get("ppl_gptq")), num(row.get("quantize_s"), ".1f"), num(row.get("quantize_imatrix_s"), ".1f")]
            for row in result["rows"]]
    gptq = [row for row in result["rows"] if row.get("ppl_gptq") is not None]
    gptq_note = ""
    if gptq:
        seconds = ", ".join(f"{row['type']} {row['gptq_s']:.0f} s" for row in gptq)
        chunks = settings.get("gptq_calibration_windows", settings["calibration_windows"])
        gptq_note = (" GPTQ-on-grid: our GPTQ step with `grid` set to the type (act-order; llama.cpp's blocks of 32, each "
                     "block's scale searched as llama.cpp's imatrix quantizer does, weighted by the Hessian's diagonal, "
                     "on the original weights as act-order's static groups are) on the first "
                     f"{chunks} of those chunks, run through the runner ({seconds}), and exported by the Export "
                     "page's job, which writes the blocks from the codes and scales: the file holds "
                     "GPTQ's error-compensated codes with no second rounding; its token embedding is quantized by "
                     "the export as in llama.cpp's files.")
        earlier = settings.get("earlier_columns")
        if earlier:
            gptq_note += (f" The GPTQ-on-grid column was measured in the run named above; the other columns come from "
                          f"{earlier['from']} (commit {earlier['commit']}).")
    model = (f"Model: {settings['model']} (the low-rank step took {settings['lowrank_s']:.0f} s). "
             if settings.get("lowrank") else "")
    return (source_line([name], ["bench/bench_gguf.py"])
            + table(["type", "file MB", "llama.cpp perplexity, no imatrix", "… with our imatrix", "… GPTQ-on-grid",
                     "quantize s", "… with imatrix s"], rows)
            + f"\n{model}Perplexity by `llama-perplexity` on {settings['chunks_scored']} chunks of {settings['context']} "
              f"tokens of the held-out Wikipedia text (llama.cpp's convention: the second half of each chunk scored); "
              f"our importance matrix from {settings['calibration_windows']} chunks of the calibration text "
              f"({settings['imatrix_seconds']:.0f} s). SmolLM2-135M's 576-wide layers are not multiples of the "
              "256-value K-quant block, so llama.cpp gives most tensors its fallback types (Q5_0, Q6_K → Q8_0, "
              "IQ4_NL), which is why the K-types are larger here than on a 7B model."
              + gptq_note + "\n")


def stream() -> str:
    """Issue 18: streamed runs, peak anonymous memory and time against depth, and a model larger than the cap."""
    result = load("stream")
    settings = result["settings"]
    rows = [row for row in result["rows"] if row["model"] != "larger than allowed"]
    cell = {(row["layers"], row["job"]): row for row in rows}
    depths = sorted({row["layers"] for row in rows})
    jobs = ["wanda", "gptq", "eval", "inmemory"]

    def mem_time(row: dict | None) -> str:
        if row is None or "error" in row:
            return "failed" if row else "–"
        loop = f" (blocks {row['block_seconds']:.1f} s)" if "block_seconds" in row else ""
        return f"{row['peak_anon_mb']:.0f} MB, {row['seconds']:.1f} s{loop}"

    body = [[str(depth), num(cell[(depth, "wanda")]["weight_mb"], ".0f"),
             *[mem_time(cell.get((depth, job))) for job in jobs]] for depth in depths]
    low, high = depths[0], depths[-1]
    ratios = []
    for job, title in zip(jobs[:3], ["Wanda", "GPTQ", "perplexity"], strict=True):
        a, b = cell[(low, job)], cell[(high, job)]
        # linear in depth: the block loop's seconds per block are the same at every depth
        per_block = [cell[(depth, job)]["block_seconds"] / depth for depth in depths]
        ratios.append(f"{title} {b['peak_anon_mb'] / a['peak_anon_mb']:.2f}× the peak memory, "
                      f"{' / '.join(f'{t:.2f}' for t in per_block)} s per block")
    big = [row for row in result["rows"] if row["model"] == "larger than allowed"]
    big_lines = []
    for row in big:
        how = "streamed" if row["job"] == "wanda" else "in memory"
        if row.get("completed"):
            big_lines.append(f"Wanda {how}: completed in {row['seconds']:.0f} s, peak anonymous memory "
                             f"{row['peak_anon_mb']:.0f} MB, perplexity {row['perplexity_before']:.1f} before and "
                             f"{row['perplexity_after']:.1f} after")
        else:
            big_lines.append(f"Wanda {how}: did not complete ({row.get('error', 'killed')})")
    big_text = ""
    if big:
        first = big[0]
        big_text = (f"\n\nLarger than allowed: {first['layers']} blocks of width {first['hidden']}, "
                    f"{first['weight_mb']:.0f} MB of weight files, run in a memory cgroup capped at "
                    f"{first['cap_mb']} MB (the whole recipe: perplexity before, the step, perplexity after, "
                    f"saving). " + "; ".join(big_lines) + ". The cap holds what the run allocates; the weight files' pages, "
                    "in the page cache since they were written, stay charged to the process that wrote them.")
    note = (f"Random-weight Llamas of width {settings['hidden']} (vocabulary {settings['vocab']}), each job in a fresh "
            f"process with one thread: peak anonymous resident memory (RssAnon sampled every 5 ms; about "
            f"{rows[0]['baseline_anon_mb']:.0f} MB of it is Python, torch and transformers before any work), the "
            f"job's wall time and, in brackets, its block loop's (first block read to last block dropped); {settings['calibration_windows']} calibration and {settings['windows']} evaluation "
            f"windows of {settings['sequence_length']} tokens; perplexity off in the Wanda and GPTQ jobs. "
            f"From {low} to {high} blocks ({'/'.join(map(str, depths))}): " + "; ".join(ratios) + " (the rest of "
            "each job's time is the same at every depth: reading the data, opening the model; the machine's two "
            "cores are shared, so single timings move by a few seconds).")
    return (source_line(["stream"], ["bench/bench_stream.py"])
            + table(["blocks", "weights MB", "Wanda, streamed", "GPTQ, streamed", "perplexity, streamed",
                     "Wanda, in memory"], body) + "\n" + note + big_text + "\n")


RENDERERS: dict[str, Callable[[], str]] = {
    "baseline": baseline, "prune": prune, "prune-peers": prune_peers, "structured": structured, "quant": quant,
    "quant-ingredients": quant_ingredients, "quant-peers": quant_peers, "decode": decode, "lowrank": lowrank,
    "distill": distill, "classify": classify, "tasks": tasks, "tasks-full": lambda: tasks("tasks_full"), "tasks-speed": tasks_speed, "estimates": estimates, "gguf": gguf, "gguf-lowrank": lambda: gguf("gguf_lowrank"),
    "models": models, "qat": qat, "qat-long": lambda: qat("qat_long"), "qat-tasks": lambda: qat("qat_tasks"),
    "distributed": distributed, "stream": stream,
}


def render(readme: str) -> str:
    """README text with every marked table written from its result file."""
    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in RENDERERS:
            raise SystemExit(f"error: README.md marks a table '{name}' that no renderer writes; "
                             f"known: {', '.join(RENDERERS)}")
        return match.group(1) + RENDERERS[name]() + match.group(4)

    return MARKER.sub(replace, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs from its results")
    args = parser.parse_args(argv)
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md's measured tables differ from bench/results/: run bench/readme_tables.py",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    print(f"wrote {len(MARKER.findall(wanted))} tables into README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
