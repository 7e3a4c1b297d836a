"""Attention-head removal for BERT-style encoders, and the saved format that reloads the result.

transformers 5 no longer has ``prune_heads``, and a BERT config cannot say "8 heads of 32 values
with a hidden size of 384" (it derives the head size as hidden / heads).  So an encoder whose heads
were removed is saved in the ``pruned-heads`` format: the ordinary safetensors weights and config
(with the original head count) plus a manifest listing the heads each layer keeps; our loader
rebuilds the model, slices its attention to those sizes and loads the weights.  Plain transformers
cannot load such a folder.

Heads are ranked by the same statistic as the decoder head pruning: for the attention output
projection, ``Σ_j ‖X_j‖ · ‖W_o[:, j]‖`` over the columns of each head, measured on training texts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.errors import RecipeError
from core.models.formats import SavedFormat, mark_format, read_manifest, register_format
from core.techniques.prune.slicing import keep_columns, keep_rows, neuron_scores, top_neurons

FORMAT = "pruned-heads"


def encoder_attentions(model: nn.Module) -> list[tuple[nn.Module, nn.Linear]]:
    """(self-attention with query/key/value Linears, its output projection) for every encoder layer."""
    found = []
    for module in model.modules():
        self_attention = getattr(module, "self", None)
        output = getattr(module, "output", None)
        if (all(isinstance(getattr(self_attention, n, None), nn.Linear) for n in ("query", "key", "value"))
                and isinstance(getattr(output, "dense", None), nn.Linear)):
            found.append((self_attention, output.dense))
    if not found:
        raise RecipeError("this encoder has no BERT-style attention (self.query/key/value and output.dense); "
                          "removing attention heads is supported for BERT-like encoders only")
    return found


def slice_heads(self_attention: nn.Module, output: nn.Linear, keep: torch.Tensor) -> None:
    """Keep only heads ``keep`` (indices) of one BERT self-attention and its output projection, in place."""
    size = self_attention.attention_head_size
    rows = (keep.reshape(-1, 1) * size + torch.arange(size)).reshape(-1)
    for name in ("query", "key", "value"):
        keep_rows(getattr(self_attention, name), rows)
    keep_columns(output, rows)
    self_attention.num_attention_heads = int(keep.numel())
    self_attention.all_head_size = int(keep.numel()) * size


def head_input_norms(model: nn.Module, tokenizer, texts: list[str], max_length: int = 128) -> list[torch.Tensor]:
    """Per layer, ‖X_j‖ of every input column j of the attention output projection over ``texts``."""
    attentions = encoder_attentions(model)
    sums = [torch.zeros(out.in_features) for _, out in attentions]
    handles = []
    for i, (_, out) in enumerate(attentions):
        def hook(_module, inputs, _output, i=i):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            sums[i] += (x ** 2).sum(dim=0).cpu()
        handles.append(out.register_forward_hook(hook))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, len(texts), 16):
                encoded = tokenizer(texts[start:start + 16], padding=True, truncation=True, max_length=max_length,
                                    return_tensors="pt").to(device)
                model(**encoded)
    finally:
        for handle in handles:
            handle.remove()
    return [s.sqrt() for s in sums]


def prune_encoder_heads(model: nn.Module, heads: int, tokenizer, texts: list[str]) -> list[list[int]]:
    """Keep the ``heads`` most important heads in every layer; mark the model for the pruned-heads format."""
    attentions = encoder_attentions(model)
    total = attentions[0][0].num_attention_heads
    if heads > total:
        raise RecipeError(f"the student cannot have more attention heads ({heads}) than the teacher ({total})")
    if heads == total:
        return [list(range(total))] * len(attentions)
    norms = head_input_norms(model, tokenizer, texts)
    kept = []
    for (attention, out), norm in zip(attentions, norms, strict=True):
        scores = neuron_scores(norm, out.weight).reshape(attention.num_attention_heads, -1).sum(dim=1)
        keep = top_neurons(scores, heads).cpu()
        slice_heads(attention, out, keep)
        kept.append(keep.tolist())
    mark_format(model, FORMAT, heads_per_layer=[len(k) for k in kept],
                attention_head_size=attentions[0][0].attention_head_size)
    return kept


def _save(model, folder: Path) -> None:
    model.save_pretrained(folder)


def _load(folder: Path, task: str):
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForSequenceClassification

    manifest = read_manifest(folder) or {}
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_config(config)
    attentions = encoder_attentions(model)
    heads = manifest.get("heads_per_layer") or []
    if len(heads) != len(attentions):
        raise RecipeError(f"{folder}: the manifest lists heads for {len(heads)} layers but the model has "
                          f"{len(attentions)}; the folder is damaged")
    for (attention, out), count in zip(attentions, heads, strict=True):
        slice_heads(attention, out, torch.arange(int(count)))
    load_model(model, str(folder / "model.safetensors"), strict=True)
    mark_format(model, FORMAT, heads_per_layer=heads, attention_head_size=manifest.get("attention_head_size"))
    return model.eval()


register_format(SavedFormat(
    name=FORMAT, description="A BERT-style encoder with attention heads removed: standard safetensors weights, "
                             "the original config and the heads each layer keeps.",
    save=_save, load=_load, plain_transformers=False,
    notes=["Reload with this app: plain transformers would rebuild every head and reject the smaller weights."]))
