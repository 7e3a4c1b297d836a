"""Classification measurements: predicted labels and accuracy / precision / recall / F1.

``classification_metrics`` is plain Python (no sklearn).  ``iter_predict_labels`` runs a
sequence-classification model over texts on the model's own device, in eval mode and inference
mode, yielding :class:`core.events.Progress`; ``predict_labels`` is its plain wrapper.
"""

from __future__ import annotations

import numbers
from collections.abc import Generator, Sequence
from typing import Any

import torch

from core.data.long_texts import encode_texts
from core.errors import DataError, StudioError
from core.eval.perplexity import eval_mode, model_device
from core.events import Progress, ProgressMeter, drain


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, with 0/0 defined as 0.0 (sklearn's ``zero_division=0``)."""
    return numerator / denominator if denominator else 0.0


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str],
                           ) -> dict[str, Any]:
    """Accuracy, macro precision / recall / F1 and per-class figures for class ids 0..K-1.

    For class c: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R), support =
    number of true examples of c.  Any 0/0 (a class never predicted, never present, or P = R = 0)
    is defined as 0.  Macro averages are unweighted means over *all* K classes in
    ``label_names``, including classes absent from both lists, so two models scored on the same
    data always share the same denominator.  Accuracy = correct / examples.

    Returns ``{"accuracy", "macro_precision", "macro_recall", "macro_f1", "examples",
    "per_class": {name: {"precision", "recall", "f1", "support"}}, "confusion_matrix"}`` where
    ``confusion_matrix[t][p]`` counts examples of true class t predicted as p.
    """
    k = len(label_names)
    if len(y_true) != len(y_pred):
        raise DataError(f"Got {len(y_true)} true labels but {len(y_pred)} predictions; they must pair up.")
    if not y_true:
        raise DataError("No examples to score; the evaluation set is empty.")
    if k == 0:
        raise DataError("No label names given; the dataset must name its classes.")
    for value in (*y_true, *y_pred):
        if not (isinstance(value, numbers.Integral) and 0 <= value < k):
            raise DataError(f"Label {value!r} is not a class id between 0 and {k - 1} ({', '.join(label_names)}); "
                            "check the dataset's label column.")
    y_true, y_pred = [int(v) for v in y_true], [int(v) for v in y_pred]
    confusion = [[0] * k for _ in range(k)]
    for t, p in zip(y_true, y_pred, strict=True):
        confusion[t][p] += 1
    per_class: dict[str, dict[str, float | int]] = {}
    for c, name in enumerate(label_names):
        tp = confusion[c][c]
        predicted = sum(confusion[t][c] for t in range(k))
        support = sum(confusion[c])
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[str(name)] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    correct = sum(confusion[c][c] for c in range(k))
    return {
        "accuracy": correct / len(y_true),
        "macro_precision": sum(v["precision"] for v in per_class.values()) / k,
        "macro_recall": sum(v["recall"] for v in per_class.values()) / k,
        "macro_f1": sum(v["f1"] for v in per_class.values()) / k,
        "examples": len(y_true),
        "per_class": per_class,
        "confusion_matrix": confusion,
    }


def iter_predict_labels(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 16,
                        max_length: int = 256, keep: str = "head") -> Generator[Progress, None, list[int]]:
    """Predict a class id (argmax of the logits) for each text, yielding progress.

    A text longer than ``max_length`` tokens is cut as the classifier steps cut it (keeping its head, its
    tail or both: :func:`core.data.long_texts.encode_texts`); texts are padded per batch (with an
    attention mask, so padding does not change a prediction).  A tokenizer without a pad token
    is run one text at a time instead, which needs no padding.
    """
    if batch_size < 1 or max_length < 1:
        raise StudioError(f"Batch size and max length must be at least 1, got {batch_size} and {max_length}.")
    ids, _cut = encode_texts(tokenizer, list(texts), max_length, keep)
    if tokenizer.pad_token is None:
        batch_size = 1
    device = model_device(model)
    meter = ProgressMeter("predict", len(ids))
    predictions: list[int] = []
    with eval_mode(model):
        for first in range(0, len(ids), batch_size):
            with torch.inference_mode():
                rows = [{"input_ids": row} for row in ids[first:first + batch_size]]
                encoded = tokenizer.pad(rows, return_tensors="pt").to(device) if batch_size > 1 else \
                    {"input_ids": torch.tensor(ids[first:first + 1], device=device)}
                logits = model(**encoded).logits
                predictions.extend(int(i) for i in logits.argmax(dim=-1).tolist())
            event = meter.update(len(predictions))
            if event:
                yield event
    return predictions


def predict_labels(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 16,
                   max_length: int = 256, keep: str = "head") -> list[int]:
    """:func:`iter_predict_labels` without the progress events."""
    return drain(iter_predict_labels(model, tokenizer, texts, batch_size, max_length, keep))


def align_predictions(predicted: Sequence[int], id2label: dict | None, label_names: Sequence[str]) -> list[int]:
    """Map a classifier's output ids onto the dataset's label ids by label name.

    A fine-tuned model has its own ``id2label`` (e.g. 0 = "rotten"), while a dataset numbers its
    labels in sorted order (0 = "fresh").  When every dataset label is one of the model's label
    names (ignoring case), predictions are translated by name; otherwise the ids are taken as they
    are (a model trained on these very ids, or generic LABEL_0/LABEL_1 names).
    """
    model_names = {int(i): str(name).lower() for i, name in (id2label or {}).items()}
    data_ids = {name.lower(): index for index, name in enumerate(label_names)}
    if not data_ids or not set(data_ids) <= set(model_names.values()):
        return list(predicted)
    return [data_ids.get(model_names.get(p, ""), p) for p in predicted]
