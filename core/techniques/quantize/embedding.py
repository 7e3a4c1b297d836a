"""Quantizing the token embedding (and a tied output head) in the packed steps (RTN, GPTQ, mixed).

The embedding is rounded to the nearest grid point, per row and group of ``group_size`` hidden values,
at ``embedding_bits`` (8 by default: llama.cpp too keeps a tied token_embd at Q8_0/Q6_K whatever the file
type, since it is also the output head) with the step's symmetry and range search; GPTQ has nothing to add here (an embedding is looked
up, not multiplied by activations, so there is no Hessian for its rows).  It is quantized before the
Linear layers, so calibration (GPTQ's Hessians, sensitivities) sees the embedding the result will have.
A head tied to the embedding is the same quantized matrix (:class:`TiedPackedHead`); an untied head is
a Linear like any other, chosen by the step's targets/ignore patterns.
"""

from __future__ import annotations

import torch
from torch import nn

from core.errors import RecipeError
from core.events import LayerStat
from core.models.module_swap import replace_module
from core.techniques.quantize.grid import check_group_size
from core.techniques.quantize.packed_embedding import PackedEmbedding, TiedPackedHead

EMBEDDING_HELP = ("Also store the token embedding (the table of one vector per vocabulary entry) in few bits, "
                  "and the output head with it when the model ties the two. On models with a big vocabulary "
                  "that table is a large share of the weights (SmolLM2-135M: 21%; some models over half), so "
                  "leaving it in 16 bits leaves the file much bigger. Rounded to the nearest level per group "
                  "of values; the perplexity cost is measured in the README.")
EMBEDDING_BITS_HELP = ("Bits per value of the token embedding (and a tied output head), 2 to 8. 8 by default, as "
                       "llama.cpp keeps a tied head at 8 (or 6) bits: on SmolLM2-135M an 8-bit table cost almost "
                       "nothing, a 4-bit one about +30% perplexity, because the head decides every next token.")


def input_embedding(model: nn.Module) -> tuple[str, nn.Module] | None:
    """(name, module) of the model's token embedding, or None if it has none we know."""
    getter = getattr(model, "get_input_embeddings", None)
    try:
        embedding = getter() if callable(getter) else None
    except (NotImplementedError, AttributeError):
        return None
    if embedding is None:
        return None
    name = next((n for n, m in model.named_modules() if m is embedding), None)
    return (name, embedding) if name else None


def tied_head_name(model: nn.Module, embedding: nn.Module) -> str | None:
    """The name of the output head if it shares the embedding's matrix, else None."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if head is None or isinstance(head, TiedPackedHead):
        return None
    weight, table = getattr(head, "weight", None), getattr(embedding, "weight", None)
    if weight is None or table is None or weight.device.type == "meta" and weight is not table:
        return None
    if weight is not table and weight.data_ptr() != table.data_ptr():
        return None
    return next((n for n, m in model.named_modules() if m is head), None)


def check_embedding(model: nn.Module, group_size: int) -> None:
    """RecipeError unless the group size divides the embedding width (runs on the skeleton too)."""
    found = input_embedding(model)
    if found is None or type(found[1]) is not nn.Embedding:
        return  # nothing to quantize: the step says so in its report
    name, embedding = found
    try:
        check_group_size(embedding.embedding_dim, group_size, name)
    except RecipeError as exc:
        raise RecipeError(f"{exc}; or switch off quantize_embedding") from None


def quantize_embedding(model: nn.Module, bits: int, group_size: int, symmetric: bool, clip: str,
                       step_index: int | None = None):
    """Replace the token embedding by a :class:`PackedEmbedding` (and a tied head by a TiedPackedHead).

    A generator yielding a LayerStat; returns a report dict (``embedding_*`` metrics) or, when the model
    has no plain ``nn.Embedding`` (already packed, or a scaled subclass), ``{"embedding_quantized": 0.0}``
    and a reason.
    """
    found = input_embedding(model)
    if found is None or type(found[1]) is not nn.Embedding:
        kind = type(found[1]).__name__ if found else "none"
        return {"embedding_quantized": 0.0}, f"The token embedding ({kind}) was left as it was: only a plain " \
                                             "nn.Embedding is quantized."
    name, embedding = found
    head = tied_head_name(model, embedding)
    packed = PackedEmbedding.from_embedding(embedding, bits, group_size, symmetric, clip)
    with torch.no_grad():
        error = float((packed.dequantized_weight().float() - embedding.weight.float()).pow(2).mean())
    replace_module(model, name, packed)
    if head is not None:
        replace_module(model, head, TiedPackedHead(packed))
    info = packed.compression_info()
    yield LayerStat(name, "bits", info["bits"], step_index)
    metrics = {"embedding_quantized": 1.0, "embedding_params": info["params"], "embedding_bits": info["bits"],
               "embedding_weight_mse": error, "head_tied": 1.0 if head else 0.0}
    tied = f" and the output head tied to it ({head})" if head else ""
    return metrics, (f"The token embedding ({name}, {info['params']:,} weights){tied} is stored in {bits} bits "
                     f"({info['bits']:.2f} bits per weight with its scales), rounded to the nearest level; "
                     "bits_per_weight above counts the Linear layers only.")
