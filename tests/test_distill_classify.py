"""Classifier distillation: train a teacher, distil into fewer layers and heads, reload, clear data errors."""

from __future__ import annotations

import csv
import random

import pytest
import torch
import yaml

from core.engine.recipe import recipe_from_text
from core.engine.runner import run_recipe
from core.errors import DataError
from core.events import Metric, drain
from core.models.loading import load_model
from tests.helpers import collect

GOOD = ["quick", "brown", "fox", "jumps", "language", "model"]
BAD = ["lazy", "dog", "removes", "weights", "fewer", "bits"]


@pytest.fixture
def labelled_csv(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(120):
            words, label = (GOOD, "fresh") if i % 2 else (BAD, "rotten")
            writer.writerow([" ".join(rng.choice(words) for _ in range(6)), label])
    return path


@pytest.fixture
def tiny_bert_dir(tmp_path, tiny_bert, tiny_tokenizer):
    folder = tmp_path / "tiny-bert"
    tiny_bert.config.id2label, tiny_bert.config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    tiny_bert.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def _recipe(model_dir, data, steps, label_column="label"):
    return recipe_from_text(yaml.safe_dump({
        "model": {"source": str(model_dir), "task": "sequence-classification"},
        "data": {"labelled": str(data), "label_column": label_column, "calibration": str(data),
                 "sequence_length": 16, "calibration_windows": 4},
        "evaluation": {"perplexity": False}, "steps": steps}))


TRAIN = {"technique": "train_classifier",
         "params": {"epochs": 3, "batch_size": 16, "learning_rate": 0.003, "schedule": "constant"}}
DISTILL = {"technique": "distill_classifier",
           "params": {"student": "shrink", "student_layers": 1, "student_heads": 1, "epochs": 2, "batch_size": 16,
                      "learning_rate": 0.003, "temperature": 2.0, "alpha": 0.5}}


def test_train_teacher_then_distil_into_fewer_layers_and_heads(tiny_bert_dir, labelled_csv, tmp_path):
    out = tmp_path / "out"
    job = run_recipe(_recipe(tiny_bert_dir, labelled_csv, [TRAIN, DISTILL]), out)
    events, report = collect(job)
    metrics = [e for e in events if isinstance(e, Metric)]
    names = {m.name for m in metrics}
    assert {"loss/total", "loss/soft", "loss/hard", "examples_per_s", "eval/accuracy", "eval/macro_f1",
            "test/accuracy"} <= names
    teacher, student = report["steps"][0]["metrics"], report["steps"][1]["metrics"]
    assert teacher["test_accuracy"] >= 0.9  # the toy task is separable
    assert student["parameters"] < student["teacher_parameters"]
    assert student["teacher_test_accuracy"] == pytest.approx(teacher["test_accuracy"])
    # validation after every epoch (plus the start): 3 epochs of 6 steps, then 2
    steps_evaluated = [m.step for m in metrics if m.name == "eval/accuracy"]
    assert steps_evaluated == [0, 6, 12, 18, 0, 6, 12]
    loaded = load_model(str(out), "sequence-classification")
    assert len(loaded.model.bert.encoder.layer) == 1
    assert loaded.model.bert.encoder.layer[0].attention.self.query.out_features == 16  # 1 head of 16
    assert report["after"]["classification"]["accuracy"] == pytest.approx(student["test_accuracy"])
    encoded = loaded.tokenizer(["quick brown fox"], return_tensors="pt")
    assert torch.isfinite(loaded.model(**encoded).logits).all()


def test_no_label_column_gets_a_clear_message(tiny_bert, tiny_tokenizer, tiny_bert_dir, labelled_csv, tmp_path):
    from core.engine.params import config_from_dict
    from core.engine.runner import RunContext
    from core.techniques.distill.classify import DistillClassifierConfig, apply_distill_classifier

    recipe = _recipe(tiny_bert_dir, labelled_csv, [DISTILL], label_column="stars")
    config = config_from_dict(DistillClassifierConfig, DISTILL["params"])
    with pytest.raises(DataError, match="Classification needs labelled examples.*no column 'stars'.*label column"):
        drain(apply_distill_classifier(tiny_bert, config, RunContext(recipe, tiny_tokenizer, "cpu")))
    with pytest.raises(DataError, match="no column 'stars'"):  # a run stops before any training
        drain(run_recipe(recipe, tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_bundled_minilm_loads_as_a_two_label_classifier():
    loaded = load_model("bundled:minilm-l6", "sequence-classification")
    config = loaded.model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.hidden_size, config.num_labels) == (6, 12, 384, 2)
    assert loaded.kind == "bundled" and loaded.source_path.is_dir()
