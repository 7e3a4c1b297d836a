"""Sequence classification: fine-tune a teacher ("train_classifier"), then distil it into a student
("distill_classifier") with the same soft/hard loss on labelled data.

Data come from ``recipe.data.labelled`` through :func:`core.data.texts.load_labelled`: seeded train /
validation / test splits that never share an example.  Accuracy, precision, recall and F1 (macro)
are measured on validation after every epoch (the best epoch's weights are kept) and on the
untouched test split once at the end.  Texts are tokenized once; a text longer than ``max_length``
tokens is cut, keeping its beginning (head), its end (tail) or both halves (head+tail), and the
share of texts cut is logged and reported.

The classifier's outputs are the data's labels in the data's order (``load_labelled`` sorts the
label names: numerically when all are whole numbers, otherwise alphabetically): ``train_classifier``
fits the head to them (:mod:`core.techniques.distill.class_heads`), so the saved folder loads in
plain transformers and predicts label names; a distilled student gets the teacher's outputs.
Besides the headline numbers, a step's metrics hold ``test_per_class`` (precision, recall, F1 and
support per label name) and ``test_confusion_matrix`` (rows: true label, columns: predicted, in the
label order), and for a distillation step the same for the teacher (``teacher_test_...``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from core.data.long_texts import KEEP, PART_KEPT, encode_texts
from core.data.texts import load_labelled
from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.errors import DataError, RecipeError
from core.eval.metrics import classification_metrics
from core.events import Log, Metric, ProgressMeter
from core.techniques.distill.class_heads import fit_head, match_head, output_names
from core.techniques.distill.losses import distillation_loss
from core.techniques.distill.options import LossOptions, TrainingOptions, settings_for, shuffled_batch
from core.techniques.distill.session import checkpoint_store, prepare_pair
from core.techniques.distill.students import DistillationChecks, StudentOptions
from core.techniques.distill.trainer import train
from core.techniques.prune.slicing import parameter_count

TASK = ("sequence-classification",)


@dataclass
class ClassifierDataOptions:
    max_length: int = param(128, "Longest text in tokens; longer texts are cut.", minimum=8, maximum=4096,
                            label="Longest text (tokens)", expert=True)
    keep: str = param("head", "Which part of a text longer than max_length is kept: head (its beginning), tail "
                      "(its end) or head+tail (the first half and the last half of the tokens allowed).",
                      choices=KEEP, label="Part of a long text kept", expert=True)
    train_examples: int = param(0, "Train on at most this many examples of the training split (0 = all).",
                                minimum=0, label="Training examples (0 = all)")


def load_splits(ctx):
    """The recipe's labelled data, or a clear message when it has no usable label column."""
    data = ctx.recipe.data
    try:
        return load_labelled(data.labelled, data.text_column, data.label_column, ctx.recipe.seed)
    except DataError as exc:
        if f"no column '{data.label_column}'" in str(exc):
            raise DataError(f"Classification needs labelled examples, but {exc} Set the label column "
                            "(data: label_column) to the column that holds each text's class, or choose a "
                            "labelled dataset.") from None
        raise


def model_label_ids(model, names: list[str]) -> list[int]:
    """For each dataset label id, the model output that means it (by name when the model names its labels)."""
    outputs = int(getattr(model.config, "num_labels", 0) or 0)
    if outputs != len(names):
        raise RecipeError(f"the classifier has {outputs} outputs ({', '.join(output_names(model))}) but the data "
                          f"has {len(names)} labels ({', '.join(names)}); add a 'Train a teacher classifier' step "
                          "(train_classifier) before this one: it gives the model a head with one output per "
                          "label, named after the labels, and trains it")
    by_name = {str(v).lower(): int(k) for k, v in (model.config.id2label or {}).items()}
    if all(n.lower() in by_name for n in names):
        return [by_name[n.lower()] for n in names]
    return list(range(len(names)))


def _encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, long ones keeping their beginning (used by bench/bench_distill.py)."""
    return encode_texts(tokenizer, texts, max_length)[0]


def _collate(ids: list[list[int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def iter_scores(model, ids: list[list[int]], labels: list[int], to_model: list[int], names: list[str], pad_id: int,
                stage: str, batch_size: int = 64):
    """Job: classification_metrics (accuracy, macro and per-class figures, confusion) of ``model`` on pre-tokenized
    examples."""
    device = next(model.parameters()).device
    back = {m: d for d, m in enumerate(to_model)}
    predicted: list[int] = []
    meter = ProgressMeter(stage, len(ids))
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            logits = model(**_collate(ids[start:start + batch_size], pad_id, device)).logits
            predicted += [back.get(int(p), int(p)) for p in logits.argmax(-1).tolist()]
            event = meter.update(len(predicted))
            if event:
                yield event
    return classification_metrics(labels, predicted, names)


HEADLINE = ("accuracy", "macro_precision", "macro_recall", "macro_f1")


def _train_classifier(student, teacher, config, ctx, splits, notes: list[str], name: str, stage: str):
    """Shared body of both steps: train with the (distillation) loss, keep the best epoch, score the test split."""
    tokenizer = ctx.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    names = splits.label_names
    to_model = model_label_ids(student, names)
    train_texts, train_labels = splits.train.texts, splits.train.labels
    if config.train_examples:
        train_texts, train_labels = train_texts[:config.train_examples], train_labels[:config.train_examples]
    keep = getattr(config, "keep", "head")
    train_ids, train_cut = encode_texts(tokenizer, train_texts, config.max_length, keep)
    targets = torch.tensor([to_model[y] for y in train_labels])
    val_ids, val_cut = encode_texts(tokenizer, splits.validation.texts, config.max_length, keep)
    test_ids, test_cut = encode_texts(tokenizer, splits.test.texts, config.max_length, keep)
    encoded = len(train_ids) + len(val_ids) + len(test_ids)
    cut = train_cut + val_cut + test_cut
    share = f"{cut / encoded:.1%}" if cut == 0 or cut / encoded >= 0.001 else "under 0.1%"
    cut_note = (f"{share} of the texts ({cut} of {encoded}) were longer than {config.max_length} tokens "
                f"and were cut, keeping {PART_KEPT[keep]}.")
    notes.append(cut_note)
    yield Log(cut_note)
    device = next(student.parameters()).device
    seed = ctx.recipe.seed + 7919 * (ctx.step_index + 1)
    settings = settings_for(config, len(train_ids), seed=seed, device=str(device), metric="accuracy",
                            higher_is_better=True, unit="examples", stage=stage, step_index=ctx.step_index)
    alpha = getattr(config, "alpha", 0.0) if teacher is not None else 0.0
    temperature = getattr(config, "temperature", 1.0)
    teacher_logits: dict[int, torch.Tensor] = {}  # the teacher is frozen: each example's logits are computed once

    def batch_at(index: int) -> torch.Tensor:
        return shuffled_batch(index, len(train_ids), config.batch_size, seed)

    def compute_loss(net, rows: torch.Tensor):
        batch = _collate([train_ids[i] for i in rows.tolist()], pad_id, device)
        t_logits = None
        if alpha > 0:
            missing = [i for i in rows.tolist() if i not in teacher_logits]
            if missing:
                with torch.no_grad():
                    out = teacher(**_collate([train_ids[i] for i in missing], pad_id, device)).logits.float()
                teacher_logits.update({i: out[k] for k, i in enumerate(missing)})
            t_logits = torch.stack([teacher_logits[i] for i in rows.tolist()])
        logits = net(**batch).logits
        total, soft, hard = distillation_loss(logits, t_logits, targets[rows].to(device), alpha, temperature)
        return total, soft.detach(), hard.detach(), len(rows)

    def evaluate(net):
        scores = yield from iter_scores(net, val_ids, splits.validation.labels, to_model, names, pad_id,
                                        "Validation")
        return {k: scores[k] for k in HEADLINE}

    yield Log(f"{stage}: {settings.total_steps} steps on {len(train_ids)} examples, "
              f"validation on {len(val_ids)} after every {settings.eval_every} steps")
    result = yield from train(student, batch_at=batch_at, compute_loss=compute_loss, evaluate=evaluate,
                              settings=settings, store=checkpoint_store(ctx, name),
                              resume=bool(getattr(ctx, "resume", False)))
    scores = yield from iter_scores(student, test_ids, splits.test.labels, to_model, names, pad_id, "Test split")
    test = {k: scores[k] for k in HEADLINE}
    for key, value in test.items():
        yield Metric(f"test/{key}", value, step_index=ctx.step_index)
    metrics = {"steps": result.steps, "best_step": result.best_step or 0,
               "validation_accuracy_best": result.best_metric or 0.0, "parameters": parameter_count(student),
               "train_examples": len(train_ids), "seconds": result.seconds, "texts_cut_share": cut / encoded,
               "classes": len(names),
               **{f"test_{k}": v for k, v in test.items()},
               "test_per_class": scores["per_class"], "test_confusion_matrix": scores["confusion_matrix"]}
    if teacher is not None:
        t_test = yield from iter_scores(teacher, test_ids, splits.test.labels, model_label_ids(teacher, names),
                                        names, pad_id, "Teacher on the test split")
        metrics.update({f"teacher_test_{k}": t_test[k] for k in HEADLINE})
        metrics.update(teacher_test_per_class=t_test["per_class"],
                       teacher_test_confusion_matrix=t_test["confusion_matrix"])
        metrics["teacher_parameters"] = parameter_count(teacher)
    if result.resumed_from is not None:
        metrics["resumed_from_step"] = result.resumed_from
    return result, metrics


@dataclass
class TrainClassifierConfig(ClassifierDataOptions, TrainingOptions):
    def validate(self) -> None:
        self.check_training()


@register("train_classifier", title="Train a teacher classifier", family="distillation",
          summary="Fine-tune the classifier (e.g. the bundled MiniLM encoder with a fresh head) on the labelled "
                  "data, so a distillation step has a teacher. Validation after every epoch; best epoch kept.",
          config=TrainClassifierConfig, needs=Needs(tasks=TASK, trains=True))
def apply_train_classifier(model, config: TrainClassifierConfig, ctx):
    """Handler: name the head's outputs after the dataset's labels, fine-tune, keep the best epoch."""
    splits = load_splits(ctx)
    notes: list[str] = []
    change = fit_head(model, splits.label_names)
    if change:
        notes.append(change)
        yield Log(change)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    result, metrics = yield from _train_classifier(model, None, config, ctx, splits, notes, "teacher",
                                                   "Training the teacher")
    if getattr(ctx, "teacher", None) is not None:
        ctx.teacher = copy.deepcopy(model)  # later recovery steps learn from the trained classifier
        yield Log("The trained classifier is now the run's teacher for later steps.")
    return StepReport(summary=f"Fine-tuned for {result.steps} steps: test accuracy {metrics['test_accuracy']:.2%}, "
                              f"macro F1 {metrics['test_macro_f1']:.3f} (best validation at step "
                              f"{result.best_step}).",
                      metrics=metrics, layers=result.history,
                      notes=notes + ["Test figures are on the split never used for training or choosing the "
                                     "epoch."])


@dataclass
class DistillClassifierConfig(DistillationChecks, StudentOptions, LossOptions, ClassifierDataOptions,
                              TrainingOptions):
    """A distillation step for classifiers: its fields come from the option groups it combines."""


@register("distill_classifier", title="Distillation (classifier)", family="distillation",
          summary="Train a smaller classifier (fewer layers/heads, a model you name, or the pruned model) on the "
                  "teacher's soft predictions and the true labels. Accuracy/F1 on validation each epoch, on the "
                  "test split at the end; checkpoints; resumable.",
          config=DistillClassifierConfig, needs=Needs(teacher=True, tasks=TASK, trains=True))
def apply_distill_classifier(model, config: DistillClassifierConfig, ctx):
    """Handler: validate the data first, build the pair, distil, keep the best epoch, score the test split."""
    splits = load_splits(ctx)
    teacher = getattr(ctx, "teacher", None) if config.student == "current" else model
    if teacher is not None:  # refuse a teacher that does not predict these labels before building a student
        model_label_ids(teacher, splits.label_names)
    student, teacher, notes = yield from prepare_pair(model, config, ctx, "sequence-classification",
                                                      splits.train.texts)
    model_label_ids(teacher, splits.label_names)
    change = match_head(student, teacher)
    if change:
        notes.append(change)
        yield Log(change)
    result, metrics = yield from _train_classifier(student, teacher, config, ctx, splits, notes, "distill",
                                                   "Distilling")
    gap = metrics["teacher_test_accuracy"] - metrics["test_accuracy"]
    return StepReport(
        summary=f"Student ({metrics['parameters'] / 1e6:.1f}M parameters) test accuracy "
                f"{metrics['test_accuracy']:.2%} vs teacher ({metrics['teacher_parameters'] / 1e6:.1f}M) "
                f"{metrics['teacher_test_accuracy']:.2%} ({gap * 100:+.1f} points gap) after {result.steps} steps.",
        metrics=metrics, layers=result.history,
        notes=notes + ["Test figures are on the split never used for training or choosing the epoch."])
