"""Zero-shot task accuracy of the bundled model, a 4-bit GPTQ result and a Wanda 50% result; and our scorer's
speed against lm-evaluation-harness's on the same rows.

    .venv/bin/python bench/bench_tasks.py [--limit 500] [--speed-limit 100] [--models original,gptq,wanda]

``--limit N`` scores a seeded random N questions of each task (0 = every question: about two hours per
model on two CPU cores).  ``--resume`` (with ``--name``) scores in chunks of ``--chunk`` questions and keeps
every finished chunk's log-likelihoods in ``bench/results/progress/<name>.json`` (a local cache of a few MB,
not committed: only the finished result is), so a stopped run goes on where it stopped; a chunk is only reused by the same model, the same
scoring code (a hash of the files that compute log-likelihoods) and the same weights (a fingerprint of every
parameter) is reused.  Each model is loaded fresh; GPTQ uses the "4-bit for a laptop" preset's settings
(4-bit, groups of 64, asymmetric, act-order, MSE ranges) and Wanda 50% unstructured, both calibrated on
64 windows of 512 tokens of bundled:wiki-calibration.

The speed part scores the first ``--speed-limit`` questions of each task with lm-eval 0.4.13
(``simple_evaluate``, the model object in memory, batch size 16) and with ours (packed choices, 1,024
tokens per batch on a CPU), one task at a time, and checks that every question gets the same answer from both.
lm-eval's time includes reading the rows and building the task, as a person running it pays; the time of
the same call on one question is recorded beside it, to show how much of it that is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import apply_step, print_table, provenance, write_results  # noqa: E402

MODELS = {  # row name -> (technique, params)
    "original": (None, {}),
    "GPTQ 4-bit g64": ("gptq_quantize", {"bits": 4, "group_size": 64, "symmetric": False, "act_order": True,
                                         "clip": "mse"}),
    "Wanda 50%": ("wanda_prune", {"sparsity": 0.5}),
}
SHORT = {"original": "original", "gptq": "GPTQ 4-bit g64", "wanda": "Wanda 50%"}
LM_EVAL_BATCH = 16


def load_fresh():
    from core.models.loading import load_model

    loaded = load_model("bundled:smollm2-135m")
    return loaded.model, loaded.tokenizer


def score_model(name: str, tasks: list[str], limit: int, seed: int) -> dict:
    from core.eval.task_accuracy import iter_task_accuracy
    from core.events import drain

    technique, params = MODELS[name]
    model, tokenizer = load_fresh()
    row: dict = {"model": name, "technique": technique, "params": params, "compress_s": 0.0, "tasks": {}}
    if technique:
        _, row["compress_s"] = apply_step(model, tokenizer, technique, params, sequence_length=512,
                                          calibration_windows=64)
    started = time.perf_counter()
    for task in tasks:
        score = drain(iter_task_accuracy(model, tokenizer, task, limit or None, seed))
        row["tasks"][task] = score.to_dict()
        print(f"  {name:<16} {score.title:<14} {score.headline} {score.headline_value:.1%} ± "
              f"{score.headline_stderr:.1%} (n={score.n}, {score.seconds:.0f} s)", flush=True)
    row["scoring_s"] = time.perf_counter() - started
    headline = [row["tasks"][t]["acc" if row["tasks"][t]["headline"] == "acc" else "acc_norm"] for t in tasks]
    row["average"] = sum(headline) / len(headline)
    return row


def weights_fingerprint(model) -> str:
    """SHA-256 over every parameter's bytes: a resumed run must score the very weights it started with."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


SCORING_CODE = ("core/eval/task_accuracy.py", "core/eval/choice_packing.py", "core/data/task_rows.py")


def scoring_code_hash() -> str:
    """A hash of the files that turn questions into log-likelihoods: a chunk from other code is not reused."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in SCORING_CODE:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


class Progress:
    """Finished chunks of a resumable run, written atomically after each chunk."""

    def __init__(self, path: Path, code: str):
        self.path, self.code = path, code
        self.data = json.loads(path.read_text()) if path.exists() else {"chunks": {}}

    def get(self, key: str, fingerprint: str) -> dict | None:
        entry = self.data["chunks"].get(key)
        if entry and entry["fingerprint"] == fingerprint and entry["code"] == self.code:
            return entry
        return None

    def put(self, key: str, fingerprint: str, loglikelihoods: list, seconds: float) -> None:
        self.data["chunks"][key] = {"fingerprint": fingerprint, "code": self.code, "seconds": seconds,
                                    "load_average": os.getloadavg()[0],
                                    "loglikelihoods": [[round(v, 6) for v in lls] for lls in loglikelihoods]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".json.partial")
        temporary.write_text(json.dumps(self.data) + "\n")
        temporary.replace(self.path)


def score_model_resumable(name: str, tasks: list[str], progress: Progress, chunk: int) -> dict:
    """Every question of every task, in chunks that survive the run being stopped (see ``--resume``)."""
    from core.data.task_rows import load_task
    from core.eval.task_accuracy import iter_choice_loglikelihoods, score_questions
    from core.events import drain

    technique, params = MODELS[name]
    model, tokenizer = load_fresh()
    row: dict = {"model": name, "technique": technique, "params": params, "compress_s": 0.0, "tasks": {}}
    if technique:
        _, row["compress_s"] = apply_step(model, tokenizer, technique, params, sequence_length=512,
                                          calibration_windows=64)
    fingerprint = weights_fingerprint(model)
    row["fingerprint"], row["scoring_s"], loads = fingerprint, 0.0, []
    for task in tasks:
        questions = load_task(task)
        lls, seconds = [], 0.0
        for start in range(0, len(questions), chunk):
            key = f"{name}/{task}/{start}"
            entry = progress.get(key, fingerprint)
            if entry is None:
                began = time.perf_counter()
                part = drain(iter_choice_loglikelihoods(model, tokenizer, questions[start:start + chunk]))
                progress.put(key, fingerprint, part, time.perf_counter() - began)
                entry = progress.get(key, fingerprint)
                print(f"  {name:<16} {task:<14} {start + len(part):>6,}/{len(questions):,} "
                      f"({entry['seconds']:.0f} s)", flush=True)
            lls += entry["loglikelihoods"]
            seconds += entry["seconds"]
            loads.append(entry["load_average"])
        score = score_questions(task, questions, lls, rows_total=len(questions), seconds=seconds, subset="all")
        row["tasks"][task] = score.to_dict()
        row["scoring_s"] += seconds
        print(f"  {name:<16} {score.title:<14} {score.headline} {score.headline_value:.1%} ± "
              f"{score.headline_stderr:.1%} (n={score.n}, {seconds:.0f} s)", flush=True)
    row["load_average_max"] = max(loads) if loads else None
    headline = [row["tasks"][t]["acc" if row["tasks"][t]["headline"] == "acc" else "acc_norm"] for t in tasks]
    row["average"] = sum(headline) / len(headline)
    return row


def speed_rows(tasks: list[str], count: int, folder: Path) -> list[dict]:
    """lm-eval and ours on the first ``count`` questions of each task: wall time and agreement."""
    from core.data.task_rows import load_task
    from core.eval.task_accuracy import choice_predictions, iter_choice_loglikelihoods
    from core.events import drain
    from tests.lm_eval_reference import lm_eval_scores

    model, tokenizer = load_fresh()
    rows = []
    for task in tasks:
        started = time.perf_counter()  # lm-eval's cost apart from scoring: reading the rows, building the task
        lm_eval_scores(model, tokenizer, [task], 1, folder, batch_size=LM_EVAL_BATCH)
        fixed_s = time.perf_counter() - started
        started = time.perf_counter()
        _, samples = lm_eval_scores(model, tokenizer, [task], count, folder, batch_size=LM_EVAL_BATCH)[task]
        lm_eval_s = time.perf_counter() - started
        questions = load_task(task)[:count]
        started = time.perf_counter()
        lls = drain(iter_choice_loglikelihoods(model, tokenizer, questions))
        ours_s = time.perf_counter() - started
        same, worst = True, 0.0
        for question, ours, sample in zip(questions, lls, samples, strict=True):
            theirs = [r[0] for r in sample["filtered_resps"]]
            worst = max(worst, *(abs(a - b) for a, b in zip(ours, theirs, strict=True)))
            same &= choice_predictions(ours, question.choices) == choice_predictions(theirs, question.choices)
        rows.append({"task": task, "questions": count, "lm_eval_s": lm_eval_s, "lm_eval_one_question_s": fixed_s,
                     "ours_s": ours_s, "ratio": ours_s / lm_eval_s, "same_answers": same,
                     "max_loglikelihood_diff": worst})
        print(f"  {task:<14} lm-eval {lm_eval_s:6.1f} s (one question: {fixed_s:.1f} s)  ours {ours_s:6.1f} s  "
              f"ratio {ours_s / lm_eval_s:.2f}  same answers {same}  max |Δll| {worst:.1e}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=500, help="questions per task (seeded subset; 0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed-limit", type=int, default=100, help="questions per task for the lm-eval timing "
                        "(0 = skip it)")
    parser.add_argument("--models", default="original,gptq,wanda")
    parser.add_argument("--tasks", default="arc_easy,arc_challenge,piqa,hellaswag,boolq")
    parser.add_argument("--name", default="tasks", help="result file bench/results/NAME.json")
    parser.add_argument("--resume", action="store_true", help="every question, in chunks kept across runs "
                        "(implies --limit 0)")
    parser.add_argument("--chunk", type=int, default=250, help="questions per kept chunk with --resume")
    args = parser.parse_args()
    import tempfile

    import torch

    from core.eval.task_accuracy import TOKEN_BUDGET

    torch.manual_seed(0)
    started = provenance()  # the code that runs; later commits during a long run do not change it
    tasks = args.tasks.split(",")
    models = [SHORT[m] for m in args.models.split(",")]
    speed = []
    if args.speed_limit:
        print(f"Speed against lm-eval, first {args.speed_limit} questions per task:", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            speed = speed_rows(tasks, args.speed_limit, Path(folder))
    if args.resume:
        args.limit = 0  # every question, in kept chunks
    print(f"Accuracy, {args.limit or 'all'} questions per task:", flush=True)
    if args.resume:
        progress = Progress(Path(__file__).resolve().parent / "results" / "progress" / f"{args.name}.json",
                            scoring_code_hash())
        rows = [score_model_resumable(name, tasks, progress, args.chunk) for name in models]
    else:
        rows = [score_model(name, tasks, args.limit, args.seed) for name in models]
    print_table([{"model": r["model"], "average": r["average"], "scoring_s": r["scoring_s"]} for r in rows],
                [("model", "model", "s"), ("average", "average headline", ".3f"), ("scoring_s", "scoring s", ".0f")])
    path = write_results(args.name, rows, {"limit": args.limit, "seed": args.seed, "tasks": tasks,
                                         "speed_limit": args.speed_limit, "lm_eval_batch_size": LM_EVAL_BATCH,
                                         "token_budget": TOKEN_BUDGET["cpu"], "speed": speed}, started)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
