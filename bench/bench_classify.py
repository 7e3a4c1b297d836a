"""Classifier benchmark (issue 19): teacher and student test accuracy on two labelled data sets.

    .venv/bin/python bench/bench_classify.py [--sets reviews,topics] [--reviews 1000] [--per-topic 60]
        [--epochs 2] [--student-layers 3]

Each set goes through the "Distil a small classifier" pipeline exactly as the app runs it (the
runner, a recipe with a ``train_classifier`` and a ``distill_classifier`` step) on the bundled
MiniLM-L6 encoder, whose 2-output head the first step sizes and names from the data:

* reviews: a seeded, balanced sample of ``--reviews`` of the bundled Rotten Tomatoes snippets
  (2 classes, fresh / rotten);
* topics: a 5-class set built from the bundled Wikipedia sample: ``--per-topic`` 40-word chunks of
  the articles of each topic (spaceflight, countries, animals, philosophy, chemistry).

The data are split 80 / 10 / 10 (seeded, stratified); accuracy and macro F1 are on the test split,
never used for training or choosing the epoch.  The student keeps ``--student-layers`` of the
teacher's 6 layers (evenly spaced) and learns from its soft predictions (T = 2, alpha = 0.5).
The result folder is then loaded in plain transformers and must name its outputs after the labels.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, provenance, write_results  # noqa: E402

TOPICS = {"spaceflight": ["Apollo 11", "Apollo 8", "Astronaut"], "countries": ["Algeria", "Andorra", "Albania"],
          "animals": ["Amphibian", "Aardvark"], "philosophy": ["Aristotle", "Arthur Schopenhauer"],
          "chemistry": ["Acid", "Alkali metal"]}
WORDS = 40


def topic_rows(per_topic: int, seed: int = 0) -> list[tuple[str, str]]:
    """``per_topic`` distinct 40-word chunks of each topic's bundled Wikipedia articles, labelled by topic."""
    from core.paths import datasets_dir

    with (datasets_dir() / "wiki/calibration.jsonl").open(encoding="utf-8") as handle:
        articles = {row["title"]: row["text"] for row in map(json.loads, handle)}
    rng = random.Random(seed)
    rows = []
    for label, titles in TOPICS.items():
        pools = [[" ".join(w[i:i + WORDS]) for i in range(0, len(w) - WORDS, WORDS)]
                 for w in (articles[t].split() for t in titles)]
        picked: list[str] = []
        while len(picked) < per_topic and any(pools):
            for pool in pools:
                if pool and len(picked) < per_topic:
                    picked.append(pool.pop(rng.randrange(len(pool))))
        rows += [(text, label) for text in picked]
    rng.shuffle(rows)
    return rows


def review_rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """A seeded sample of the bundled reviews, half fresh and half rotten."""
    from core.paths import datasets_dir

    with (datasets_dir() / "rotten-tomatoes/reviews.csv").open(encoding="utf-8", newline="") as handle:
        reviews = [(row["text"], row["label"]) for row in csv.DictReader(handle)]
    rng = random.Random(seed)
    rows = [r for label in ("fresh", "rotten") for r in rng.sample([r for r in reviews if r[1] == label], count // 2)]
    rng.shuffle(rows)
    return rows


def run_set(name: str, rows: list[tuple[str, str]], args, folder: Path) -> dict:
    import torch
    import yaml
    from transformers import AutoModelForSequenceClassification

    from core.engine.recipe import recipe_from_text
    from core.engine.runner import run_recipe
    from core.events import drain

    data = folder / f"{name}.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    common = {"epochs": args.epochs, "batch_size": 16, "learning_rate": args.learning_rate, "max_length": 64}
    recipe = recipe_from_text(yaml.safe_dump({
        "name": f"classify {name}", "model": {"source": "bundled:minilm-l6", "task": "sequence-classification"},
        "data": {"labelled": str(data)}, "evaluation": {"perplexity": False, "kl_to_teacher": False},
        "steps": [{"technique": "train_classifier", "params": common},
                  {"technique": "distill_classifier",
                   "params": {**common, "student": "shrink", "student_layers": args.student_layers,
                              "layer_selection": "evenly-spaced", "temperature": 2.0, "alpha": 0.5}}]}))
    started = time.perf_counter()
    report = drain(run_recipe(recipe, folder / f"{name}-out"))
    wall = time.perf_counter() - started
    teacher, student = report["steps"][0]["metrics"], report["steps"][1]["metrics"]
    saved = AutoModelForSequenceClassification.from_pretrained(folder / f"{name}-out", dtype=torch.float32)
    names = sorted({label for _, label in rows})
    assert saved.config.id2label == dict(enumerate(names)), saved.config.id2label
    return {"set": name, "classes": len(names), "examples": len(rows), "train_examples": teacher["train_examples"],
            "test_examples": report["after"]["classification"]["examples"],
            "teacher_accuracy": teacher["test_accuracy"], "teacher_macro_f1": teacher["test_macro_f1"],
            "teacher_parameters": teacher["parameters"],
            "student_accuracy": student["test_accuracy"], "student_macro_f1": student["test_macro_f1"],
            "student_parameters": student["parameters"],
            "saved_accuracy": report["after"]["classification"]["accuracy"],
            "chance": max(sum(1 for _, lb in rows if lb == n) for n in names) / len(rows),
            "student_layers": args.student_layers, "labels": names, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="reviews,topics")
    parser.add_argument("--reviews", type=int, default=1000)
    parser.add_argument("--per-topic", type=int, default=60)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--student-layers", type=int, default=3)
    args = parser.parse_args(argv)
    started = provenance()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-classify-") as folder:
        for name in args.sets.split(","):
            data = review_rows(args.reviews) if name == "reviews" else topic_rows(args.per_topic)
            rows.append(run_set(name, data, args, Path(folder)))
            print_table(rows, [("set", "set", "s"), ("classes", "classes", "d"),
                               ("teacher_accuracy", "teacher acc", ".3f"), ("student_accuracy", "student acc", ".3f"),
                               ("wall_s", "wall s", ".0f")])
    path = write_results("classify", rows, vars(args), started)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
