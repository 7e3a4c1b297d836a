"""Shared helpers of the structured pruning steps: slice Linears, rank, count parameters.

Structured pruning changes tensor shapes instead of writing zeros.  Every structured step (MLP
neurons, key/value head groups, whole layers) ends up calling the two slicers here, which keep
chosen output rows or input columns of one ``nn.Linear`` and fix its ``in_features`` /
``out_features`` so the module stays an ordinary Linear that plain transformers reloads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

STRUCTURED_NOTES = [
    "Structured pruning removes whole rows, columns or layers: the saved file is smaller and decoding "
    "is faster on any hardware, and plain transformers loads the result (only the config changed).",
    "Quality drops more than with unstructured pruning at the same share of parameters removed; a "
    "distillation step afterwards (the original model as teacher) can recover much of it.",
]


def parameter_count(model: nn.Module) -> int:
    """Unique parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def keep_rows(linear: nn.Linear, index: torch.Tensor) -> None:
    """Keep only output rows ``index`` of ``linear`` (weight and bias), in that order, in place."""
    index = torch.as_tensor(index, dtype=torch.long).to(linear.weight.device)
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight.data.index_select(0, index).contiguous(),
                                     requires_grad=linear.weight.requires_grad)
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.data.index_select(0, index).contiguous(),
                                       requires_grad=linear.bias.requires_grad)
    linear.out_features = int(index.numel())


def keep_columns(linear: nn.Linear, index: torch.Tensor) -> None:
    """Keep only input columns ``index`` of ``linear`` (the bias is per output, so it is unchanged)."""
    index = torch.as_tensor(index, dtype=torch.long).to(linear.weight.device)
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight.data.index_select(1, index).contiguous(),
                                     requires_grad=linear.weight.requires_grad)
    linear.in_features = int(index.numel())


def check_index(index, width: int, what: str) -> torch.Tensor:
    """``index`` as a sorted, duplicate-free long tensor of positions in ``[0, width)``.

    Raises ValueError with ``what`` in the message when it is empty, out of range or repeats a position.
    """
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    if index.numel() == 0:
        raise ValueError(f"{what}: keep at least one")
    if int(index.min()) < 0 or int(index.max()) >= width:
        raise ValueError(f"{what}: positions must lie in [0, {width - 1}], got {index.tolist()}")
    if index.unique().numel() != index.numel():
        raise ValueError(f"{what}: a position is listed twice")
    return torch.sort(index).values


def check_per_layer(per_layer: Sequence, layers: int, width: int, argument: str, what: str) -> list[torch.Tensor]:
    """``per_layer`` (the positions each layer keeps) as one :func:`check_index` tensor per layer.

    Raises ValueError unless there is one entry per layer (``layers`` of them), every entry is a valid
    index into ``width`` positions and every layer keeps the same number; ``argument`` names the
    argument and ``what`` the positions (e.g. "MLP neurons") in the messages.
    """
    if len(per_layer) != layers:
        raise ValueError(f"{argument} has {len(per_layer)} entries; the model has {layers} layers")
    indices = [check_index(list(index) if not isinstance(index, torch.Tensor) else index, width,
                           f"{what} of layer {i}") for i, index in enumerate(per_layer)]
    counts = {int(index.numel()) for index in indices}
    if len(counts) != 1:
        raise ValueError(f"every layer must keep the same number of {what}, got {sorted(counts)}")
    return indices


def neuron_scores(input_norms: torch.Tensor, down_weight: torch.Tensor) -> torch.Tensor:
    """Importance of each input column k of a projection: ``‖X_k‖ · ‖W[:, k]‖`` (shape [in_features]).

    Wanda's statistic per column: how large the input is on calibration text times how much the
    projection amplifies it.  Used for MLP neurons (down projection) and attention heads (o_proj).
    """
    column_norms = down_weight.detach().to(torch.float32).norm(dim=0)
    return input_norms.to(device=column_norms.device, dtype=torch.float32) * column_norms


def top_neurons(scores: torch.Tensor, kept: int) -> torch.Tensor:
    """Indices of the ``kept`` highest scores, in ascending index order (ties broken by position)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return torch.sort(order[:kept]).values


def removed_share(scores: torch.Tensor, keep: torch.Tensor) -> float:
    """Share of the total score carried by the positions not in ``keep`` (0 when all scores are 0)."""
    dropped = torch.ones_like(scores, dtype=torch.bool)
    dropped[keep.to(scores.device)] = False
    total = float(scores.sum())
    return float(scores[dropped].sum()) / total if total > 0 else 0.0
