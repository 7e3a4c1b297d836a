"""Students: built from the teacher (fewer layers, heads or MLP neurons), a model the user names,
or the model as it arrives at the step (recovery after pruning, low-rank or sharing).

Building from the teacher reuses the structured-pruning code (``core.techniques.prune``): layers
are removed with ``drop_blocks`` (chosen evenly, by block influence, or from a list), decoder heads
and MLP neurons with the ``attention_prune`` / ``mlp_prune`` steps' own handlers, encoder heads
with :mod:`encoder_heads`.  The student starts from the teacher's weights.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from core.engine.calibration import find_blocks
from core.engine.params import param
from core.errors import RecipeError
from core.events import Log
from core.models.loading import iter_load_model
from core.techniques.distill.encoder_heads import prune_encoder_heads
from core.techniques.prune.kv_groups import AttentionPruneConfig, apply_attention_prune, attention_shape
from core.techniques.prune.layer_drop import drop_blocks, measure_block_influence
from core.techniques.prune.mlp_neurons import MLPPruneConfig, apply_mlp_prune
from core.techniques.prune.slicing import parameter_count

STUDENTS = ("shrink", "current", "model")
LAYER_SELECTIONS = ("evenly-spaced", "block-influence", "list")


@dataclass
class StudentOptions:
    """Which student to train (shared by the distillation steps)."""

    student: str = param("shrink", "shrink: a smaller copy of the model arriving at this step, which is the "
                         "teacher. current: the model as it arrives (after pruning etc.), taught by the original "
                         "model of the run. model: the model named in student_model, taught by the model arriving "
                         "at this step.", choices=STUDENTS, label="Student")
    student_layers: int = param(0, "shrink: how many layers the student keeps (0 = all).", minimum=0,
                                label="Layers the student keeps (0 = all)")
    layer_selection: str = param("evenly-spaced", "shrink: which layers to keep. evenly-spaced (every other "
                                 "layer when keeping half), block-influence (drop those that change the hidden "
                                 "state least), list (the indices in layer_list).", choices=LAYER_SELECTIONS,
                                 label="Which layers to keep")
    layer_list: list[int] = param([], "shrink with layer_selection = list: the layer indices to keep, from 0.",
                                  label="Layer list", expert=True)
    student_heads: int = param(0, "shrink: attention heads per layer the student keeps (0 = all). An encoder "
                               "(BERT-like) with heads removed is saved in a format only this app loads; plain "
                               "transformers cannot express it.", minimum=0,
                               label="Attention heads kept (0 = all)", expert=True)
    mlp_reduction: float = param(0.0, "shrink (causal LMs): share of MLP neurons removed in every layer.",
                                 minimum=0.0, maximum=1.0, exclusive_maximum=True,
                                 label="Share of MLP neurons removed")
    student_model: str = param("", "student = model: the student model (folder or hub id); it must use the "
                               "teacher's tokenizer.", label="Student model")

    def check_student(self) -> None:
        if self.student == "model" and not self.student_model.strip():
            raise RecipeError("student = model needs student_model: the folder or hub id of the student")
        if self.student == "shrink" and self.layer_selection == "list":
            if not self.layer_list:
                raise RecipeError("layer_selection = list needs layer_list: the indices of the layers to keep")
            if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.layer_list):
                raise RecipeError(f"layer_list must hold layer indices (whole numbers from 0), got {self.layer_list}")


class DistillationChecks:
    """The checks and the teacher choice every distillation config shares (a mixin without fields, so the
    config's own field order is unchanged)."""

    def validate(self) -> None:
        self.check_loss()
        self.check_training()
        self.check_student()

    def needs_original(self) -> bool:
        """student = current learns from the run's original model, which the runner must keep."""
        return self.student == "current"


def evenly_spaced(total: int, keep: int) -> list[int]:
    """``keep`` of ``total`` layer indices spread evenly, first and last included (every other for half)."""
    if keep >= total:
        return list(range(total))
    if keep == 1:
        return [total - 1]
    if total % keep == 0:
        stride = total // keep
        return list(range(0, total, stride))
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def check_shrink(options: StudentOptions, layers: int, heads: int) -> None:
    """Refuse a 'smaller' student that would be larger than the teacher, or a layer list that does not fit."""
    if options.student_layers > layers:
        raise RecipeError(f"the student cannot have more layers ({options.student_layers}) than the teacher "
                          f"({layers}); choose at most {layers}")
    if options.student_heads > heads:
        raise RecipeError(f"the student cannot have more attention heads ({options.student_heads}) than the "
                          f"teacher ({heads} per layer)")
    if options.layer_selection == "list" and options.student_layers == 0 and any(i >= layers for i in options.layer_list):
        raise RecipeError(f"layer_list {options.layer_list} names a layer the teacher does not have "
                          f"(it has layers 0 to {layers - 1})")


def _heads(model) -> int:
    return int(getattr(model.config, "num_attention_heads", 0) or 0)


def shrink_student(model, options: StudentOptions, ctx, task: str, texts: list[str] | None = None,
                   ) -> Generator[Any, None, list[str]]:
    """Make ``model`` (a copy of the teacher) smaller in place as ``options`` say; return notes."""
    _, blocks = find_blocks(model)
    total = len(blocks)
    check_shrink(options, total, _heads(model))
    notes = []
    keep = None
    if options.layer_selection == "list":
        keep = sorted(set(options.layer_list))
        if any(i >= total for i in keep):
            raise RecipeError(f"layer_list {options.layer_list} names a layer the teacher does not have "
                              f"(it has layers 0 to {total - 1})")
    elif options.student_layers and options.student_layers < total:
        if options.layer_selection == "evenly-spaced":
            keep = evenly_spaced(total, options.student_layers)
        else:
            influence = yield from measure_block_influence(model, ctx.calibration_windows(), ctx.step_index)
            order = sorted(range(total), key=lambda i: (-influence[i], i))
            keep = sorted(order[:options.student_layers])
    if keep is not None and len(keep) < total:
        drop_blocks(model, [i for i in range(total) if i not in keep])
        notes.append(f"Student keeps layers {keep} of the teacher's {total}.")
    heads = _heads(model)
    if options.student_heads and options.student_heads < heads:
        if task == "sequence-classification":
            prune_encoder_heads(model, options.student_heads, ctx.tokenizer, (texts or [])[:256])
        else:
            yield from _prune_decoder_heads(model, options.student_heads, ctx)
        notes.append(f"Student keeps {options.student_heads} of {heads} attention heads per layer.")
    if options.mlp_reduction > 0:
        if task != "causal-lm":
            raise RecipeError("mlp_reduction is available for causal LMs only; set it to 0 for classifiers")
        report = yield from apply_mlp_prune(model, MLPPruneConfig(reduction=options.mlp_reduction), ctx)
        notes.append(report.summary)
    return notes


def _prune_decoder_heads(model, keep_heads: int, ctx):
    heads, kv_heads, _ = attention_shape(model)
    group = heads // kv_heads
    if keep_heads % group:
        raise RecipeError(f"this model shares each key/value head among {group} query heads, so the student "
                          f"keeps a multiple of {group} heads; {keep_heads} is not")
    yield from apply_attention_prune(model, AttentionPruneConfig(kv_heads_to_remove=kv_heads - keep_heads // group),
                                     ctx)


def check_tokenizers(student_tokenizer, teacher_tokenizer, name: str) -> None:
    """Refuse a student whose vocabulary differs from the teacher's (their predictions would not line up)."""
    s_vocab, t_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if s_vocab != t_vocab:
        differ = len(set(s_vocab.items()) ^ set(t_vocab.items()))
        raise RecipeError(f"the student {name} uses a different tokenizer from the teacher ({len(s_vocab)} vs "
                          f"{len(t_vocab)} tokens, {differ} entries differ): distillation compares their "
                          "predictions token by token, so pick a student made with the teacher's tokenizer")


def load_named_student(source: str, task: str, teacher, teacher_tokenizer, device: str):
    """Load the student the user named; refuse a different tokenizer or a student larger than the teacher."""
    loaded = yield from iter_load_model(source, task, False, device)
    check_tokenizers(loaded.tokenizer, teacher_tokenizer, source)
    s_params, t_params = parameter_count(loaded.model), parameter_count(teacher)
    if s_params > t_params:
        raise RecipeError(f"the student {source} has more parameters ({s_params / 1e6:.1f}M) than the teacher "
                          f"({t_params / 1e6:.1f}M); a distillation student must be smaller")
    yield Log(f"Student {source}: {s_params / 1e6:.2f}M parameters (teacher {t_params / 1e6:.2f}M)")
    return loaded.model
