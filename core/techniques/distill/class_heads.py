"""A classifier's head sized and named from the data's labels.

A sequence classifier ends in one output layer (an ``nn.Linear`` with one row per class: BERT's
``classifier``, RoBERTa's ``classifier.out_proj``, a decoder's ``score``).  Its config names the
outputs (``id2label`` / ``label2id``).  :func:`fit_head` makes the model's outputs the data's labels,
in the data's order (:func:`core.data.texts.load_labelled` sorts label names: numerically when they
are all whole numbers, otherwise alphabetically), so the saved folder loads in plain transformers and
predicts label names:

* a head whose outputs already are the data's labels (by name, ignoring case, in any order) is kept;
* a head with as many outputs as labels but only generic names (LABEL_0, LABEL_1, ...) keeps its
  weights and gets the labels' names;
* any other head (another number of outputs, or outputs named after other classes) is replaced by a
  new layer with one output per label, freshly initialised; the returned sentence says so and why.

:func:`match_head` gives a student the teacher's outputs in the teacher's order (distillation compares
their logits position by position).
"""

from __future__ import annotations

import torch
from torch import nn

from core.errors import RecipeError


def output_names(model) -> list[str]:
    """The model's output names in output order (LABEL_i where the config has none)."""
    count = int(getattr(model.config, "num_labels", 0) or 0)
    id2label = {int(k): str(v) for k, v in (getattr(model.config, "id2label", None) or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(count)]


def _generic(names: list[str]) -> bool:
    return names == [f"LABEL_{i}" for i in range(len(names))]


def output_layer(model) -> tuple[str, nn.Linear]:
    """(dotted name, layer) of the classifier's last Linear with one row per output, outside the base model."""
    count = int(getattr(model.config, "num_labels", 0) or 0)
    prefix = getattr(model, "base_model_prefix", "") or ""
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and module.out_features == count and name
             and not (prefix and (name == prefix or name.startswith(prefix + ".")))]
    if not found:
        raise RecipeError(f"cannot find this classifier's output layer (a linear layer with {count} outputs "
                          "after the encoder), so its head cannot be fitted to the data's labels")
    return found[-1]


def set_output_names(model, names: list[str]) -> None:
    """Name the model's outputs ``names`` (config.id2label / label2id), in this order."""
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: i for i, name in enumerate(names)}


def replace_head(model, names: list[str]) -> None:
    """Swap the output layer for a fresh one with ``len(names)`` outputs named ``names``, in place."""
    name, old = output_layer(model)
    new = nn.Linear(old.in_features, len(names), bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    std = float(getattr(model.config, "initializer_range", 0.02) or 0.02)
    with torch.no_grad():
        new.weight.normal_(0.0, std)
        if new.bias is not None:
            new.bias.zero_()
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], new)
    model.config.num_labels = len(names)
    if hasattr(model, "num_labels"):
        model.num_labels = len(names)
    set_output_names(model, names)


def fit_head(model, names: list[str]) -> str | None:
    """Make the model's outputs the data's labels ``names`` (see the module docstring).

    Returns a sentence for the log when the head was renamed or replaced, None when it was kept."""
    current = output_names(model)
    if len(current) == len(names) and {n.lower() for n in current} == {n.lower() for n in names}:
        return None
    if len(current) == len(names) and _generic(current):
        set_output_names(model, names)
        return (f"The classifier's {len(names)} outputs had no names ({', '.join(current)}); they are now the "
                f"data's labels: {', '.join(names)}.")
    if len(current) != len(names):
        why = f"has {len(current)} outputs ({', '.join(current)}) but the data has {len(names)} labels"
    else:
        why = f"predicts other classes ({', '.join(current)}) than the data's labels"
    replace_head(model, names)
    return (f"The classifier's head {why}, so it was replaced by a new head with {len(names)} outputs named "
            f"{', '.join(names)} (new weights, learnt in this step).")


def match_head(student, teacher) -> str | None:
    """Give ``student`` the teacher's outputs in the teacher's order; a sentence for the log when it changed."""
    wanted, current = output_names(teacher), output_names(student)
    if [n.lower() for n in current] == [n.lower() for n in wanted]:
        return None
    position = {n.lower(): i for i, n in enumerate(current)}
    if len(current) == len(wanted) and set(position) == {n.lower() for n in wanted}:
        _, layer = output_layer(student)
        order = torch.tensor([position[n.lower()] for n in wanted], device=layer.weight.device)
        with torch.no_grad():
            layer.weight.copy_(layer.weight[order])
            if layer.bias is not None:
                layer.bias.copy_(layer.bias[order])
        set_output_names(student, wanted)
        return f"The student's outputs were reordered to the teacher's: {', '.join(wanted)}."
    if len(current) == len(wanted) and _generic(current):
        set_output_names(student, wanted)
        return f"The student's unnamed outputs ({', '.join(current)}) are now the teacher's: {', '.join(wanted)}."
    replace_head(student, wanted)
    return (f"The student's head ({len(current)} outputs: {', '.join(current)}) does not predict the teacher's "
            f"classes, so it was replaced by a new head with the teacher's {len(wanted)} outputs "
            f"({', '.join(wanted)}; new weights, learnt in this step).")
