"""Low-rank factorization math and the module that holds it.

A Linear ``y = W x + b`` with W [m, n] (m outputs, n inputs) becomes ``y = B (A x) + b`` with
A [k, n] and B [m, k]: k·(m + n) weights instead of m·n, a saving only while k < m·n / (m + n).
Three ways to choose A and B, all pure functions tested on small layers:

- :func:`svd_factors`: truncated SVD of W (best in ‖W − Ŵ‖, Eckart–Young);
- :func:`whitened_svd_factors`: SVD-LLM's truncation-aware whitening, best in ‖(W − Ŵ) X‖;
- :func:`rom_factors`: reduced-order modelling, projecting W on the top principal directions of
  the layer's outputs Y = W X (also best in ‖(W − Ŵ) X‖, found from the output covariance).
"""

from __future__ import annotations

import torch
from torch import nn

from core.errors import StudioError


def break_even_rank(out_features: int, in_features: int) -> float:
    """m·n / (m + n): a factorization saves parameters only at a rank strictly below this."""
    return out_features * in_features / (out_features + in_features)


class FactorizedLinear(nn.Module):
    """``up(down(x))``: ``down`` is Linear(in → rank, no bias), ``up`` is Linear(rank → out, the original bias).

    Both factors are ordinary ``nn.Linear`` modules, so the model inspector counts them honestly
    (k·(m + n) weights) and later steps (quantization, pruning) can target them like any Linear.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        if rank < 1:
            raise StudioError(f"a factorized layer needs rank ≥ 1, got {rank}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False, dtype=dtype, device=device)
        self.up = nn.Linear(rank, out_features, bias=bias, dtype=dtype, device=device)

    @classmethod
    def from_factors(cls, linear: nn.Linear, down: torch.Tensor, up: torch.Tensor) -> FactorizedLinear:
        """Replace ``linear`` by ``up @ down`` (down [k, in], up [out, k]); the bias is kept."""
        weight = linear.weight
        module = cls(linear.in_features, linear.out_features, down.shape[0], linear.bias is not None,
                     dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            module.down.weight.copy_(down)
            module.up.weight.copy_(up)
            if linear.bias is not None:
                module.up.bias.copy_(linear.bias)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """up(down(x)): two thin matrix products instead of one full one."""
        return self.up(self.down(x))

    def dense_weight(self) -> torch.Tensor:
        """The product up·down as one [out, in] matrix (what merging to dense stores)."""
        return self.up.weight @ self.down.weight

    def factorization_info(self) -> dict:
        """Rank and parameter counts of this layer, for reports."""
        return {"rank": self.rank, "params": self.rank * (self.in_features + self.out_features),
                "dense_params": self.in_features * self.out_features,
                "break_even_rank": break_even_rank(self.out_features, self.in_features)}

    def extra_repr(self) -> str:
        """Sizes and rank, shown when the model is printed."""
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def _check_rank(weight: torch.Tensor, k: int) -> None:
    if not 1 <= k <= min(weight.shape):
        raise StudioError(f"rank {k} is outside 1..{min(weight.shape)} for a {tuple(weight.shape)} weight")


def _split(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced factors: up = U_k √S_k, down = √S_k V_kᵀ."""
    root = s[:k].sqrt()
    return root.unsqueeze(1) * vh[:k], u[:, :k] * root.unsqueeze(0)


def svd_factors(weight: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated SVD: (down [k, n], up [m, k]) with up·down = U_k S_k V_kᵀ, the best rank-k ‖W − Ŵ‖."""
    _check_rank(weight, k)
    u, s, vh = torch.linalg.svd(weight.detach().to(torch.float64), full_matrices=False)
    down, up = _split(u, s, vh, k)
    return down.to(weight.dtype), up.to(weight.dtype)


def damped_cholesky(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Lower Cholesky factor S of H + λI (λ = damp · mean diag H), with more damping if H is singular."""
    h = hessian.detach().to(torch.float64)
    mean = float(torch.diag(h).mean()) or 1.0
    lam = damp * mean
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    for _ in range(6):
        lower, info = torch.linalg.cholesky_ex(h + lam * eye)
        if int(info) == 0:
            return lower
        lam = max(lam * 10, 1e-8 * mean)
    raise StudioError("could not factorise a layer's input statistics even with heavy dampening; "
                      "raise 'dampening' or use more calibration windows")


def whitened_svd_factors(weight: torch.Tensor, hessian: torch.Tensor, k: int,
                         damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """SVD-LLM: S = chol(XXᵀ + λI); SVD of W·S = U Σ Vᵀ; down = √Σ_k V_kᵀ S⁻¹, up = U_k √Σ_k.

    Since S⁻¹X has orthonormal rows, truncating the SVD of W·S minimises ‖(W − Ŵ) X‖ for the
    calibration inputs X (``hessian`` is any positive multiple of XXᵀ, e.g. (2/n) Σ x xᵀ).
    """
    _check_rank(weight, k)
    w = weight.detach().to(torch.float64)
    lower = damped_cholesky(hessian.to(w.device), damp)
    u, s, vh = torch.linalg.svd(w @ lower, full_matrices=False)
    down, up = _split(u, s, vh, k)
    # Z = down · S⁻¹  ⇔  Sᵀ Zᵀ = downᵀ (Sᵀ is upper triangular)
    down = torch.linalg.solve_triangular(lower.T, down.T, upper=True).T
    return down.to(weight.dtype), up.to(weight.dtype)


def output_covariance(weight: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """Second moment of the layer's outputs Y = W X, from its inputs' second moment: W·XXᵀ·Wᵀ."""
    w = weight.detach().to(torch.float64)
    return w @ hessian.detach().to(dtype=torch.float64, device=w.device) @ w.T


def rom_factors(weight: torch.Tensor, output_cov: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduced-order model: V_k = top-k eigenvectors of Cov(Y); down = V_kᵀ W [k, n], up = V_k [m, k].

    The layer becomes W ≈ V_k (V_kᵀ W): outputs are projected on their k principal directions.
    """
    _check_rank(weight, k)
    cov = output_cov.detach().to(torch.float64)
    cov = (cov + cov.T) / 2
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    top = vectors[:, -k:].flip(1).to(weight.device)
    down = top.T @ weight.detach().to(torch.float64)
    return down.to(weight.dtype), top.to(weight.dtype)


def output_error(weight: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor) -> float:
    """tr(ΔW H ΔWᵀ): with H = (2/n) Σ x xᵀ this is twice the mean squared output change per token."""
    delta = (weight.detach() - approx.detach()).to(torch.float64)
    return float(((delta @ hessian.detach().to(torch.float64)) * delta).sum())
