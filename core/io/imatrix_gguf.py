"""llama.cpp's importance-matrix file (the GGUF that ``llama-imatrix`` writes and ``llama-quantize --imatrix`` reads).

Layout, as ``tools/imatrix/imatrix.cpp`` (``IMatrixCollector::save_imatrix``) writes it:

* metadata ``general.type = "imatrix"``, ``imatrix.datasets`` (the calibration text's names),
  ``imatrix.chunk_count`` (chunks of ``imatrix.chunk_size`` tokens it was computed on);
* for every weight, in sorted name order, two F32 tensors: ``<weight>.in_sum2`` with one value per input
  channel j — Σ over every token of x_j² (the raw sum, not a mean) — and ``<weight>.counts`` with the number
  of tokens summed.  The quantizer weighs each column's rounding error by in_sum2 / counts.

Weight names are llama.cpp's (``blk.3.attn_q.weight``), as our GGUF export names the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import StudioError
from core.io.atomic import atomic_file


@dataclass
class ImatrixEntry:
    """One weight's statistics: Σ x² per input channel over ``count`` tokens."""

    sum2: np.ndarray  # [in_features], float64 or float32
    count: int

    def mean_square(self) -> np.ndarray:
        """The per-channel mean of x², what llama-quantize weighs rounding errors by."""
        return self.sum2 / max(self.count, 1)


def write_imatrix(entries: dict[str, ImatrixEntry], path: str | Path, *, datasets: list[str], chunk_count: int,
                  chunk_size: int) -> Path:
    """Write ``entries`` (llama.cpp weight name -> statistics) as an imatrix GGUF at ``path``, atomically."""
    import gguf

    if not entries:
        raise StudioError("the importance matrix is empty: the calibration saw no Linear layers")
    path = Path(path)
    with atomic_file(path, "writing the importance matrix") as partial:
        writer = gguf.GGUFWriter(str(partial), "llama")
        writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)  # llama-imatrix writes no architecture
        try:
            writer.add_type(gguf.GGUFType.IMATRIX)
            writer.add_array(gguf.Keys.IMatrix.DATASETS, list(datasets))
            writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, int(chunk_count))
            writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, int(chunk_size))
            for name in sorted(entries):
                entry = entries[name]
                # ggml shapes (nval, 1) and (1, 1) are numpy's (1, nval) and (1, 1)
                writer.add_tensor(f"{name}.in_sum2", np.asarray(entry.sum2, dtype=np.float32).reshape(1, -1))
                writer.add_tensor(f"{name}.counts", np.full((1, 1), float(entry.count), dtype=np.float32))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return path


def read_imatrix(path: str | Path) -> dict[str, ImatrixEntry]:
    """Read an imatrix GGUF (ours or llama-imatrix's): weight name -> statistics."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    kind = reader.get_field(gguf.Keys.General.TYPE)
    if kind is None or kind.contents() != gguf.GGUFType.IMATRIX:
        raise StudioError(f"{Path(path).name} is not an importance-matrix GGUF (general.type is not 'imatrix')")
    tensors = {t.name: np.array(t.data, dtype=np.float64) for t in reader.tensors}
    entries = {}
    for name, sums in tensors.items():
        if name.endswith(".in_sum2"):
            weight = name[: -len(".in_sum2")]
            entries[weight] = ImatrixEntry(sums.reshape(-1), int(round(float(tensors[f"{weight}.counts"].sum()))))
    return entries
