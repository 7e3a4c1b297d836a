"""Layer sharing: one set of Linear weights serves several decoder layers.

A *follower* layer drops its own Linear weights and uses those of a *source* layer (the same
``nn.Parameter`` objects, so they are stored once in memory and on disk).  Optionally each shared
Linear of the follower adds a small per-layer low-rank correction ``up(down(x))`` fitted to the
difference between its own old weight and the source's (truncated SVD).  Norms stay per layer.

Pure functions: :func:`weight_similarity`, :func:`choose_pairs`, :func:`share_block`.
"""

from __future__ import annotations

import torch
from torch import nn

from core.errors import RecipeError
from core.techniques.lowrank.factorized import svd_factors, whitened_svd_factors


class CorrectedSharedLinear(nn.Module):
    """``base(x) + up(down(x))``: ``base`` is the source layer's Linear (shared), down/up this layer's own."""

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__()
        self.base = base
        weight = base.weight
        self.down = nn.Linear(base.in_features, rank, bias=False, dtype=weight.dtype, device=weight.device)
        self.up = nn.Linear(rank, base.out_features, bias=False, dtype=weight.dtype, device=weight.device)
        self.in_features, self.out_features, self.rank = base.in_features, base.out_features, rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The shared weight's output plus this layer's own low-rank correction."""
        return self.base(x) + self.up(self.down(x))


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """The block's own Linears by relative name (e.g. ``self_attn.q_proj``), in order."""
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear) and name}


def weight_similarity(a: nn.Module, b: nn.Module) -> float:
    """Mean cosine similarity between corresponding Linear weights of two blocks (1 = identical)."""
    la, lb = block_linears(a), block_linears(b)
    if la.keys() != lb.keys():
        raise RecipeError("the two layers have different Linears and cannot share weights")
    sims = [float(torch.nn.functional.cosine_similarity(la[k].weight.detach().flatten().float(),
                                                        lb[k].weight.detach().flatten().float(), dim=0))
            for k in la]
    return sum(sims) / len(sims)


def check_pairs(pairs: list[tuple[int, int]], num_layers: int | None = None) -> None:
    """Reject sharing a layer with itself, a layer following two sources, chains, and unknown layers."""
    followers = [f for _, f in pairs]
    for source, follower in pairs:
        if source == follower:
            raise RecipeError(f"layer {source} cannot share weights with itself: pick two different layers")
        if num_layers is not None and not (0 <= source < num_layers and 0 <= follower < num_layers):
            raise RecipeError(f"layer pair ({source}, {follower}) is outside the model's layers 0..{num_layers - 1}")
        if source in followers:
            raise RecipeError(f"layer {source} is used as a source but itself takes another layer's weights; "
                              "share from the original layer instead")
    if len(set(followers)) != len(followers):
        raise RecipeError("a layer appears twice as a follower: each layer can take only one source's weights")


def choose_pairs(scores: dict[tuple[int, int], float], count: int) -> list[tuple[int, int]]:
    """Greedily pick ``count`` (source, follower) pairs, most similar first (higher score = more alike).

    A follower is never a source and takes one source only, so no chains form.
    """
    chosen: list[tuple[int, int]] = []
    sources: set[int] = set()
    followers: set[int] = set()
    for (source, follower), _ in sorted(scores.items(), key=lambda item: -item[1]):
        if len(chosen) == count:
            break
        if source == follower or follower in followers or follower in sources or source in followers:
            continue
        chosen.append((source, follower))
        sources.add(source)
        followers.add(follower)
    if len(chosen) < count:
        raise RecipeError(f"could only find {len(chosen)} layer pairs to share, not {count}: share fewer layers")
    return chosen


def share_block(source: nn.Module, follower: nn.Module, correction_rank: int = 0,
                fit: bool = True, hessians: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Make ``follower`` use ``source``'s Linear weights; return each Linear's relative weight change.

    With ``correction_rank`` > 0 each follower Linear becomes a :class:`CorrectedSharedLinear` whose
    correction is fitted to Δ = own weight − source weight when ``fit`` (else left as built, for
    loading saved weights).  Without ``hessians`` the fit is the truncated SVD of Δ (best in ‖Δ − UV‖);
    with the follower Linears' input second moments H ∝ XXᵀ (keyed by relative name) it is SVD-LLM's
    whitened SVD, best in ‖(Δ − UV) X‖: the layer's *outputs* on calibration text change least.
    """
    src, own = block_linears(source), block_linears(follower)
    if src.keys() != own.keys():
        raise RecipeError("the two layers have different Linears and cannot share weights")
    changes: dict[str, float] = {}
    for name, linear in own.items():
        base = src[name]
        if base.weight.shape != linear.weight.shape:
            raise RecipeError(f"{name} has different shapes in the two layers and cannot be shared")
        delta = (linear.weight.detach() - base.weight.detach()).float()
        own_norm = float(linear.weight.detach().float().norm()) or 1.0
        parent_name, _, child = name.rpartition(".")
        parent = follower.get_submodule(parent_name) if parent_name else follower
        if correction_rank > 0:
            module = CorrectedSharedLinear(base, min(correction_rank, min(delta.shape)))
            if fit:
                hessian = (hessians or {}).get(name)
                down, up = (svd_factors(delta, module.rank) if hessian is None
                            else whitened_svd_factors(delta, hessian, module.rank))
                with torch.no_grad():
                    module.down.weight.copy_(down)
                    module.up.weight.copy_(up)
                delta = delta - (up @ down).float()
            setattr(parent, child, module)
        else:
            linear.weight = base.weight
            if base.bias is not None:
                linear.bias = base.bias
        changes[name] = float(delta.norm()) / own_norm
    return changes
