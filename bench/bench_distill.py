"""Distillation benchmark: (a) MiniLM classifier on Rotten Tomatoes, (b) SmolLM2-135M with a third of its layers removed.

    .venv/bin/python bench/bench_distill.py [--part a|b|both] [--teacher-epochs 1] [--student-epochs 1]
        [--train-examples 0] [--lm-steps 150] [--lm-length 128] [--eval-windows 20]

(a) The bundled MiniLM-L6 encoder (6 layers, 12 heads, hidden 384) gets a fresh 2-label head and is
fine-tuned on the bundled Rotten Tomatoes train split (the teacher); a student keeping 4 evenly
spaced layers and 8 heads per layer, initialised from it, is distilled with T = 2, alpha = 0.5.
Both are scored on the untouched test split.  Then the student's Linear layers are quantized to
NF4 with bitsandbytes (as our bnb step does; classifier head kept in full precision), and - as a
second row - its word embeddings too (bitsandbytes' EmbeddingNF4), because the 30522 x 384 embedding
table is about half of MiniLM's weights and dominates the size once the layers are 4-bit.
Size = bytes of the model's state dict as saved (safetensors), fp32 unless quantized.

(b) SmolLM2-135M (the teacher), a student keeping 20 of its 30 layers chosen by block influence,
distilled on windows of the bundled calibration text for a fixed number of steps; perplexity on
the held-out evaluation text of the teacher, the student before and after, and the wall time.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, write_results  # noqa: E402


def _ctx(recipe, tokenizer, root):
    from core.engine.runner import RunContext

    return RunContext(recipe, tokenizer, "cpu", checkpoint_root=Path(root))


def state_bytes(model) -> int:
    """Bytes of the model as saved (safetensors of its state dict; bnb layers serialise packed).

    bitsandbytes cannot serialise a 4-bit embedding, so one is counted as what it holds: the packed
    4-bit codes plus its per-block absmax scales, and the rest of the model is saved without it.
    """
    import copy

    from safetensors.torch import save_model

    counted = 0
    try:
        from bitsandbytes.nn import Embedding4bit
    except ImportError:
        Embedding4bit = ()
    embeddings = [(n, m) for n, m in model.named_modules() if Embedding4bit and isinstance(m, Embedding4bit)]
    if embeddings:
        model = copy.deepcopy(model)
        for name, module in embeddings:
            state = module.weight.quant_state
            counted += module.weight.data.numel() * module.weight.data.element_size()
            counted += state.absmax.numel() * state.absmax.element_size()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, torch.nn.Identity())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.safetensors"
        save_model(model, str(path))
        return path.stat().st_size + counted


def quantize_nf4(model, embeddings: bool) -> None:
    """Replace every Linear but the classifier head (and optionally the word embeddings) by bitsandbytes NF4."""
    import bitsandbytes as bnb

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, torch.nn.Linear) and not full.startswith("classifier"):
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                        compute_dtype=torch.float32, quant_type="nf4")
                new.weight = bnb.nn.Params4bit(child.weight.data.clone(), requires_grad=False, quant_type="nf4")
                if child.bias is not None:
                    new.bias = torch.nn.Parameter(child.bias.data.clone(), requires_grad=False)
                new.support_avx512bf16_for_cpu = False
                setattr(module, child_name, new.to("cpu"))
            elif embeddings and isinstance(child, torch.nn.Embedding) and child_name == "word_embeddings":
                # (bitsandbytes' EmbeddingNF4 takes no padding_idx; it only matters for gradients)
                new = bnb.nn.EmbeddingNF4(child.num_embeddings, child.embedding_dim)
                new.weight = bnb.nn.Params4bit(child.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                               blocksize=child.embedding_dim // 6)
                setattr(module, child_name, new.to("cpu"))


def _speed(model, tokenizer, texts, max_length=64) -> float:
    from core.techniques.distill.classify import _collate, _encode

    ids = _encode(tokenizer, texts, max_length)
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(ids), 64):
            model(**_collate(ids[start:start + 64], tokenizer.pad_token_id, "cpu"))
    return len(ids) / (time.perf_counter() - started)


def part_a(args) -> list[dict]:
    from core.engine.params import config_from_dict
    from core.engine.recipe import Recipe, recipe_from_text
    from core.events import drain
    from core.models.loading import load_model
    from core.techniques.distill.classify import (
        DistillClassifierConfig,
        TrainClassifierConfig,
        _encode,
        apply_distill_classifier,
        apply_train_classifier,
        iter_scores,
        load_splits,
    )
    from core.techniques.prune.slicing import parameter_count

    torch.manual_seed(0)
    loaded = load_model("bundled:minilm-l6", "sequence-classification")
    model, tokenizer = loaded.model, loaded.tokenizer
    recipe: Recipe = recipe_from_text("model: {task: sequence-classification}\ndata: {labelled: bundled:rotten-tomatoes}")
    common = {"batch_size": 32, "max_length": 64, "learning_rate": 1e-4, "warmup_steps": 30,
              "train_examples": args.train_examples}
    root = args.checkpoints or tempfile.mkdtemp(prefix="bench-distill-")
    print(f"training checkpoints: {root}", flush=True)
    ctx = _ctx(recipe, tokenizer, root)
    ctx.resume = bool(args.checkpoints)  # continue (or just reuse) an earlier run's training checkpoints
    started = time.perf_counter()
    teacher_report = drain(apply_train_classifier(model, config_from_dict(
        TrainClassifierConfig, {**common, "epochs": args.teacher_epochs}), ctx))
    teacher_seconds = time.perf_counter() - started
    teacher = copy.deepcopy(model)
    ctx.step_index = 1
    started = time.perf_counter()
    student_report = drain(apply_distill_classifier(model, config_from_dict(DistillClassifierConfig, {
        **common, "epochs": args.student_epochs, "student": "shrink", "student_layers": 4, "student_heads": 8,
        "temperature": 2.0, "alpha": 0.5}), ctx))
    student_seconds = time.perf_counter() - started
    student = model
    splits = load_splits(ctx)
    test_texts = splits.test.texts
    rows = []
    for name, net, metrics, seconds in (("teacher (6 layers, 12 heads)", teacher, teacher_report.metrics,
                                         teacher_seconds),
                                        ("student (4 layers, 8 heads)", student, student_report.metrics,
                                         student_seconds)):
        rows.append({"model": name, "accuracy": metrics["test_accuracy"], "macro_f1": metrics["test_macro_f1"],
                     "parameters": parameter_count(net), "mb": state_bytes(net) / 1e6,
                     "examples_per_s": _speed(net, tokenizer, test_texts), "train_s": seconds,
                     "train_steps": metrics["steps"]})
    teacher_mb = rows[0]["mb"]
    to_model = list(range(len(splits.label_names)))
    test_ids = _encode(tokenizer, test_texts, 64)
    for label, embeddings in (("student NF4 (Linears)", False), ("student NF4 (Linears + embeddings)", True)):
        quantized = copy.deepcopy(student)
        quantize_nf4(quantized, embeddings)
        scores = drain(iter_scores(quantized, test_ids, splits.test.labels, to_model, splits.label_names,
                                   tokenizer.pad_token_id, "test"))
        rows.append({"model": label, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                     "parameters": parameter_count(student), "mb": state_bytes(quantized) / 1e6,
                     "examples_per_s": _speed(quantized, tokenizer, test_texts)})
    for row in rows:
        row["smaller_than_teacher"] = teacher_mb / row["mb"]
    return rows


def part_b(args) -> list[dict]:
    from core.data.texts import load_texts, token_windows
    from core.engine.params import config_from_dict
    from core.engine.recipe import DataSpec, Recipe
    from core.eval.perplexity import perplexity
    from core.events import drain
    from core.models.loading import load_model
    from core.techniques.distill.causal import DistillCausalLMConfig, apply_distill_causal_lm
    from core.techniques.prune.layer_drop import drop_blocks, measure_block_influence
    from core.techniques.prune.slicing import parameter_count

    torch.manual_seed(0)
    loaded = load_model("bundled:smollm2-135m")
    model, tokenizer = loaded.model, loaded.tokenizer
    windows = token_windows(load_texts("bundled:wiki-evaluation"), tokenizer, args.lm_length, args.eval_windows)
    recipe = Recipe(data=DataSpec(sequence_length=args.lm_length, calibration_windows=16))
    ctx = _ctx(recipe, tokenizer, tempfile.mkdtemp(prefix="bench-distill-lm-"))
    teacher_ppl = perplexity(model, windows).perplexity
    teacher_params = parameter_count(model)
    # the student before distillation: the same layer choice the step makes (block influence on calibration)
    before_model = copy.deepcopy(model)
    influence = drain(measure_block_influence(before_model, ctx.calibration_windows()))
    keep = sorted(sorted(range(len(influence)), key=lambda i: (-influence[i], i))[:20])
    drop_blocks(before_model, [i for i in range(len(influence)) if i not in keep])
    before_ppl = perplexity(before_model, windows).perplexity
    before_params = parameter_count(before_model)
    del before_model
    config = config_from_dict(DistillCausalLMConfig, {
        "student": "shrink", "student_layers": 20, "layer_selection": "block-influence", "temperature": 2.0,
        "alpha": 0.5, "learning_rate": args.lm_lr, "schedule": "cosine", "warmup_steps": 10, "batch_size": 4,
        "max_steps": args.lm_steps, "eval_every": max(1, args.lm_steps // 3), "train_windows": 4 * args.lm_steps,
        "validation_windows": 4, "sequence_length": args.lm_length})
    started = time.perf_counter()
    report = drain(apply_distill_causal_lm(model, config, ctx))
    seconds = time.perf_counter() - started
    after_ppl = perplexity(model, windows).perplexity
    closed = (before_ppl - after_ppl) / (before_ppl - teacher_ppl)
    return [{"model": "teacher SmolLM2-135M (30 layers)", "perplexity": teacher_ppl,
             "parameters": teacher_params},
            {"model": "student 20 layers, before", "perplexity": before_ppl, "parameters": before_params},
            {"model": f"student 20 layers, after {report.metrics['steps']} steps", "perplexity": after_ppl,
             "parameters": parameter_count(model), "wall_s": seconds, "gap_closed": closed,
             "best_step": report.metrics["best_step"]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    parser.add_argument("--teacher-epochs", type=float, default=1.0)
    parser.add_argument("--student-epochs", type=float, default=1.0)
    parser.add_argument("--train-examples", type=int, default=0, help="0 = the whole train split")
    parser.add_argument("--lm-steps", type=int, default=150)
    parser.add_argument("--lm-length", type=int, default=128)
    parser.add_argument("--lm-lr", type=float, default=2e-4)
    parser.add_argument("--eval-windows", type=int, default=20)
    parser.add_argument("--checkpoints", help="part a: resume from this checkpoint folder of an earlier run "
                        "(printed at the start) instead of training from scratch")
    args = parser.parse_args()
    settings = vars(args)
    results = []
    if args.part in ("a", "both"):
        rows = part_a(args)
        results += [{"part": "a: classification", **row} for row in rows]
        print_table(rows, [("model", "model", ""), ("accuracy", "test acc", ".4f"), ("macro_f1", "macro F1", ".4f"),
                           ("parameters", "params", ","), ("mb", "MB", ".1f"),
                           ("smaller_than_teacher", "× smaller", ".2f"), ("examples_per_s", "examples/s", ".0f"),
                           ("train_s", "train s", ".0f"), ("train_steps", "steps", "")])
    if args.part in ("b", "both"):
        rows = part_b(args)
        results += [{"part": "b: causal LM", **row} for row in rows]
        print_table(rows, [("model", "model", ""), ("perplexity", "perplexity", ".2f"), ("parameters", "params", ","),
                           ("wall_s", "wall s", ".0f"), ("gap_closed", "gap closed", ".1%"),
                           ("best_step", "best step", "")])
    print("wrote", write_results("distill", results, settings))


if __name__ == "__main__":
    main()
