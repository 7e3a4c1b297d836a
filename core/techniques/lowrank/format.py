"""The ``factorized`` saved format, and merging factorized layers back into dense Linears.

Saving writes ``config.json``, the generation config, and ``model.safetensors`` with the
factorized layers' two factors (``….down.weight``, ``….up.weight``); the manifest lists each
factorized layer's rank.  Loading builds the model from its config, puts a
:class:`FactorizedLinear` of the saved rank in place of every listed Linear and loads the weights
strictly, so the reloaded model computes the same logits.  Plain ``transformers`` cannot load
such a folder; :func:`merge_to_dense` gives one it can, with no fewer parameters than the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import ModelLoadError
from core.models.formats import (
    _FORMAT_ATTRIBUTE,
    SavedFormat,
    mark_format,
    model_format,
    read_manifest,
    register_format,
)
from core.models.module_swap import replace_module
from core.techniques.lowrank.factorized import FactorizedLinear

FORMAT = "factorized"
WEIGHTS = "model.safetensors"


def factorized_ranks(model: nn.Module) -> dict[str, int]:
    """Every FactorizedLinear in the model by name, with its rank."""
    return {name: m.rank for name, m in model.named_modules() if isinstance(m, FactorizedLinear)}


def mark_factorized(model: nn.Module) -> None:
    """Mark the model to be saved in the ``factorized`` format, recording the current ranks."""
    mark_format(model, FORMAT, ranks=factorized_ranks(model), dtype=str(next(model.parameters()).dtype))


def save_factorized(model: nn.Module, folder: Path) -> None:
    """Write config, generation config and the weights (shared tensors once) into ``folder``."""
    from safetensors.torch import save_model

    folder = Path(folder)
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    save_model(model, str(folder / WEIGHTS), metadata={"format": "pt"})


def _auto_class(task: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task == "sequence-classification" else AutoModelForCausalLM


def rebuild_model(folder: Path, task: str, ranks: dict[str, int], dtype_name: str, prepare=None) -> Any:
    """Build the model from ``folder``'s config, factorize ``ranks``' layers, run ``prepare(model)``, load weights.

    The weights are loaded strictly (every tensor must match), shared tensors once; used by the
    ``factorized`` and ``shared`` formats.
    """
    from safetensors.torch import load_model
    from transformers import AutoConfig

    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    dtype = getattr(torch, str(dtype_name).replace("torch.", ""), torch.float32)
    model = _auto_class(task).from_config(config).to(dtype)
    for name, rank in ranks.items():
        try:
            linear = model.get_submodule(name)
        except AttributeError as exc:
            raise ModelLoadError(f"{folder}: the manifest names layer {name!r}, which the model does not have") from exc
        if not isinstance(linear, nn.Linear):
            raise ModelLoadError(f"{folder}: layer {name!r} is not a Linear and cannot be factorized")
        replace_module(model, name, FactorizedLinear(linear.in_features, linear.out_features, int(rank),
                                                     linear.bias is not None, dtype=dtype))
    if prepare is not None:
        prepare(model)
    try:
        load_model(model, str(folder / WEIGHTS), strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"the weights in {folder} do not match the layers its manifest describes: "
                             f"{str(exc).splitlines()[0][:200]}") from exc
    return model.eval()


def load_factorized(folder: Path, task: str) -> Any:
    """Rebuild the model from config, restore the factorized layers at their ranks, load weights strictly."""
    manifest = read_manifest(Path(folder)) or {}
    ranks = manifest.get("ranks")
    if not isinstance(ranks, dict):
        raise ModelLoadError(f"{folder} is marked 'factorized' but its manifest lists no layer ranks")
    model = rebuild_model(folder, task, ranks, manifest.get("dtype", "float32"))
    mark_factorized(model)
    return model


def merge_to_dense(model: nn.Module) -> int:
    """Replace every FactorizedLinear by one dense Linear holding up·down; return how many were merged.

    The result loads in plain transformers but is exactly as big as the original dense model:
    merging gives up the saving (it only keeps the low-rank approximation's quality).
    """
    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, FactorizedLinear):
            weight = module.up.weight
            dense = nn.Linear(module.in_features, module.out_features, bias=module.up.bias is not None,
                              dtype=weight.dtype, device=weight.device)
            with torch.no_grad():
                dense.weight.copy_(module.dense_weight())
                if module.up.bias is not None:
                    dense.bias.copy_(module.up.bias)
            replace_module(model, name, dense)
            merged += 1
    mark = model_format(model)
    if mark is not None and mark.get("format") == FORMAT:
        delattr(model, _FORMAT_ATTRIBUTE)
    return merged


register_format(SavedFormat(
    name=FORMAT,
    description="Low-rank factorized Linears (two smaller Linears each); weights in safetensors, ranks "
                "in this manifest. Loads with LLM Compression Studio, not with plain transformers.",
    save=save_factorized, load=load_factorized, plain_transformers=False,
    notes=["Export with merge_to_dense for a folder plain transformers loads; it is no smaller than the "
           "original model."]))
