"""The token embedding (and a tied output head) stored as packed low-bit codes.

For a model with a big vocabulary the embedding is a large share of the weights (SmolLM2-135M: 28 of
135 M; a 268 M model with a 151 k vocabulary: 168 M), so a "4-bit" result that leaves it in 16 or 32
bits is not much smaller than its source.  :class:`PackedEmbedding` holds the embedding matrix
[vocabulary, hidden] exactly as :class:`PackedLinear` holds a weight [out, in] (the same
compressed-tensors buffers: ``weight_packed``, ``weight_scale``, ``weight_zero_point``,
``weight_shape``), with groups along the hidden width.  Embedding rows are looked up, not
multiplied: :meth:`PackedEmbedding.forward` gathers only the rows of the ids asked for and
dequantizes those, ``(code − zero) · scale`` with each row's own scales.

A tied output head (``lm_head.weight`` *is* the embedding matrix) stays tied: it becomes a
:class:`TiedPackedHead` that owns no tensor and multiplies by the embedding's codes (through
PackedLinear's path, so on a CPU a 4-bit head with groups of 32–256 runs PyTorch's int4 kernel).  One
quantized tensor, saved once, used both ways.
"""

from __future__ import annotations

import torch
from torch import nn

from core.techniques.quantize.grid import dequantize, pack_int, round_to_grid, unpack_int
from core.techniques.quantize.packed_linear import PackedLinear


class PackedEmbedding(PackedLinear):
    """An ``nn.Embedding`` whose matrix [num_embeddings, embedding_dim] is stored as packed codes."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int, group_size: int, symmetric: bool,
                 dtype: torch.dtype = torch.float32, device=None, padding_idx: int | None = None):
        super().__init__(embedding_dim, num_embeddings, bits, group_size, symmetric, bias=False, dtype=dtype,
                         device=device)
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, bits: int, group_size: int, symmetric: bool,
                       clip: str = "none") -> PackedEmbedding:
        """Round ``embedding``'s matrix to the grid (nearest code per value, scales per row and group)."""
        weight = embedding.weight
        with torch.no_grad():
            codes, scales, zeros = round_to_grid(weight, bits, group_size, symmetric, dtype=weight.dtype, clip=clip)
        module = cls(embedding.num_embeddings, embedding.embedding_dim, bits, group_size, symmetric,
                     dtype=weight.dtype, device=weight.device, padding_idx=embedding.padding_idx)
        with torch.no_grad():
            module._fill(codes, scales, zeros)
        return module

    def _fill(self, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None) -> None:
        """Pack ``codes`` [rows, dim] and store ``scales`` / ``zeros`` [rows, groups] in the buffers."""
        self.weight_packed.copy_(pack_int(codes, self.bits))
        self.weight_scale.copy_(scales.to(self.weight_scale.dtype))
        if not self.symmetric:
            self.weight_zero_point.copy_(pack_int(zeros.T.contiguous(), self.bits).T)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """The dequantized rows of ``ids`` [...] -> [..., embedding_dim] (only those rows are unpacked)."""
        flat = ids.reshape(-1)
        codes = unpack_int(self.weight_packed[flat], self.bits, self.in_features)
        zeros = self.zeros()
        rows = dequantize(codes, self.weight_scale[flat], None if zeros is None else zeros[flat])
        return rows.reshape(*ids.shape, self.in_features)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x Ŵᵀ: the matrix used as an output head (logits over the vocabulary)."""
        return PackedLinear.forward(self, x)

    def compression_info(self) -> dict:
        info = super().compression_info()
        return {**info, "shape": [self.num_embeddings, self.embedding_dim]}

    def extra_repr(self) -> str:
        group = self.group_size or "per-row"
        return (f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, group_size={group}, "
                f"symmetric={self.symmetric}")


class TiedPackedHead(nn.Module):
    """An output head tied to a :class:`PackedEmbedding`: logits = x Ŵᵀ with the embedding's own codes.

    It owns no tensor (the embedding is referenced, not registered as a child), so the state dict and
    the saved file hold the quantized matrix once, and the size counts count it once.
    """

    def __init__(self, embedding: PackedEmbedding):
        super().__init__()
        object.__setattr__(self, "tied_to", embedding)  # not a submodule: no second copy in the state dict
        self.in_features, self.out_features = embedding.embedding_dim, embedding.num_embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tied_to.matmul(x)

    def extra_repr(self) -> str:
        return f"tied to the packed embedding ({self.out_features}×{self.in_features}, {self.tied_to.bits} bits)"
