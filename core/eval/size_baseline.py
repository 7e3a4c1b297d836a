"""Which size of the original a result is compared with: its file, or its size as a 16-bit model.

A GGUF source stored in 4 or 8 bits is loaded dequantized, and a run saves its result as bfloat16
safetensors, so comparing that result with the small GGUF file says "bigger than the original" about
a result that is exactly as big as the original in the same format.  The honest baseline for such a
result is the original as a 16-bit model (``bytes_as_16bit``, measured from the loaded model by
``core.models.model_info``); a result exported as GGUF again is compared with the GGUF file.  Every other
source (a transformers folder, a hub model, a 16- or 32-bit GGUF) is compared with its weight files,
as stored.

Pure functions over a report's ``before`` part (or a history record's ``*_before`` metrics): no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Sizes within this share of each other are "the same size" (a file's header and metadata differ by a
# few kilobytes): a result must be smaller than the original by more than this to count as smaller.
SAME_SIZE = 0.005


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


@dataclass(frozen=True)
class OriginalSize:
    """The original's sizes as measured before a run: ``stored`` (its weight files), ``as_16bit`` (its
    weights saved as a 16-bit model), and, for a GGUF source, ``stored_format`` ('4-bit GGUF Q4_1')
    and ``stored_bits`` (4)."""

    stored: float | None
    as_16bit: float | None = None
    stored_format: str | None = None
    stored_bits: int | None = None

    @property
    def compact_gguf(self) -> bool:
        """Whether the source is a GGUF file stored more compactly than 16 bits per weight (then a
        floating-point result is compared with the 16-bit size)."""
        if self.stored_format is None or self.as_16bit is None or self.stored is None:
            return False
        return self.stored_bits < 16 if self.stored_bits else self.stored < self.as_16bit

    def compared(self, result_is_gguf: bool = False) -> float | None:
        """The size a result is compared with: the 16-bit size for a floating-point result from a compact
        GGUF, the stored file otherwise (a GGUF result is compared with the GGUF file)."""
        return self.as_16bit if self.compact_gguf and not result_is_gguf else self.stored

    def compared_words(self, result_is_gguf: bool = False) -> str:
        """'its size as a 16-bit model' or 'its file', for the size :meth:`compared` returns."""
        return "its size as a 16-bit model" if self.compact_gguf and not result_is_gguf else "its file"


def original_size(before: Mapping[str, Any]) -> OriginalSize:
    """The original's sizes from a report's ``before`` part (``bytes_on_disk``, ``bytes_as_16bit``,
    ``stored_format``, ``stored_bits``); anything not recorded is None."""
    stored_format = before.get("stored_format")
    bits = before.get("stored_bits")
    return OriginalSize(_number(before.get("bytes_on_disk")), _number(before.get("bytes_as_16bit")),
                        stored_format if isinstance(stored_format, str) and stored_format else None,
                        int(bits) if isinstance(bits, int) and not isinstance(bits, bool) and bits > 0 else None)


def original_size_of_metrics(metrics: Mapping[str, Any]) -> OriginalSize:
    """The same from a history record's metrics (``bytes_on_disk_before``, ``bytes_as_16bit_before``, …)."""
    return original_size({key.removesuffix("_before"): value for key, value in metrics.items()
                          if key.endswith("_before")})


def is_smaller(size: float | None, baseline: float | None) -> bool:
    """Whether ``size`` is smaller than ``baseline`` by more than :data:`SAME_SIZE` (both measured)."""
    return size is not None and baseline is not None and size < baseline * (1 - SAME_SIZE)


def size_change_words(size: float, baseline: float) -> str:
    """'same size', '37% smaller' or '12% larger': ``size`` against ``baseline`` in plain words."""
    ratio = size / baseline
    if abs(ratio - 1) <= SAME_SIZE:
        return "same size"
    if ratio < 1:
        return f"{1 - ratio:.0%} smaller"
    return f"{ratio - 1:.0%} larger" if ratio < 2 else f"{ratio:.1f}× as large"
