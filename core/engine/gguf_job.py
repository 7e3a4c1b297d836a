"""GGUF export of a result or of any model the app loads, in every type, with our importance matrix.

``iter_gguf_export`` is the job the CLI (``export-gguf RESULT -o model.gguf --type Q4_K_M --imatrix``) and the
Export page run.  F16 / Q8_0 / Q4_0 without an importance matrix are written by our exporter alone
(:func:`core.io.export.iter_export_gguf`); every other type, and any type with ``imatrix=True``, goes through
llama.cpp's quantizer (:mod:`core.io.gguf_quantize`).  The importance matrix is computed by the block-by-block
calibration engine (:mod:`core.engine.imatrix`) on the calibration text — the result's own recipe's, unless
another is given — cut as ``llama-imatrix`` cuts it (chunks of L tokens, BOS first where the model adds one).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data.perplexity_windows import perplexity_windows
from core.data.texts import load_texts
from core.engine.imatrix import iter_importance_matrix
from core.engine.recipe import DataSpec, recipe_from_text
from core.errors import StudioError
from core.eval.compare import OutputFolderError, read_output_folder
from core.events import Log
from core.io.export import _pre_tokenizer, describe_output, iter_export_gguf
from core.io.gguf_convert import iter_converted_gguf, written_by_our_writer
from core.io.gguf_quantize import iter_quantized_gguf
from core.io.gguf_types import needs_quantizer
from core.io.imatrix_gguf import ImatrixEntry, write_imatrix
from core.io.llama_cpp_tools import require_tool
from core.io.output_rules import Input, check_output_file
from core.models.loading import iter_load_model
from core.partials import journaled, partial_path


@dataclass
class ImatrixSettings:
    """Which text the importance matrix is computed on (None: the result's recipe's, else the app's default)."""

    calibration: str | None = None
    windows: int | None = None
    sequence_length: int | None = None
    text_column: str = "text"


def imatrix_windows(texts: list[str], tokenizer: Any, sequence_length: int, windows: int) -> Any:
    """The calibration chunks as llama-imatrix reads them: [n, L] token ids, BOS in each chunk's first place."""
    return perplexity_windows(texts, tokenizer, sequence_length, windows, "llama.cpp").tokens


def iter_imatrix_file(model: Any, tokenizer: Any, path: str | Path, texts: list[str], *, dataset: str,
                      sequence_length: int, windows: int, device: str = "cpu",
                      ) -> Generator[Any, None, dict[str, ImatrixEntry]]:
    """Compute the importance matrix of ``model`` on ``texts`` and write it (llama.cpp's imatrix GGUF) at ``path``."""
    chunks = imatrix_windows(texts, tokenizer, sequence_length, windows)
    entries = yield from iter_importance_matrix(model, chunks, device=device)
    write_imatrix(entries, path, datasets=[dataset], chunk_count=len(chunks), chunk_size=sequence_length)
    yield Log(f"Importance matrix: {len(entries)} weights from {len(chunks)} chunks of {sequence_length} tokens "
              f"of {dataset}")
    return entries


def iter_gguf_export(source: str | Path, destination: str | Path, quant: str = "Q8_0", *, imatrix: bool = False,
                     settings: ImatrixSettings | None = None, save_imatrix: str | Path | None = None,
                     overwrite: bool = False, keep_embedding: bool = False, device: str = "cpu",
                     imatrix_file: str | Path | None = None) -> Generator[Any, None, dict[str, Any]]:
    """Write ``source`` (a run's output folder, or any model source the app loads) as one GGUF of type ``quant``.

    ``imatrix``: compute our importance matrix and let the quantizer use it; ``save_imatrix``: also keep it at
    that path (llama.cpp's imatrix GGUF, for its own tools); ``imatrix_file``: with ``imatrix``, use this
    importance matrix (computed earlier, e.g. once for a queue of types) instead of computing one;
    ``keep_embedding``: the token embedding stays F16.  Atomic: nothing half-written on failure or cancel.
    """
    quantizer = needs_quantizer(quant, imatrix)
    if save_imatrix is not None and not imatrix:
        raise StudioError("--save-imatrix needs --imatrix: there is no importance matrix to save without it")
    if not quantizer:
        return (yield from iter_export_gguf(source, destination, quant, device=device, overwrite=overwrite,
                                            quantize_embedding=not keep_embedding))
    require_tool("llama-quantize")  # before any work: one line saying how to get it
    settings = settings or ImatrixSettings()
    try:
        run = read_output_folder(source)
    except OutputFolderError:
        run = None
    if run is not None:
        info = describe_output(source)
        if info.gguf_problem:
            raise StudioError(f"GGUF export does not apply to this result: {info.gguf_problem}")
        inputs = [Input(info.folder, "the result folder being exported")]
        load_from, task, pre = str(info.folder), run.task, _pre_tokenizer(run.teacher_source)
        name = run.report.get("recipe") or None
        data = recipe_from_text(run.recipe_yaml).data
    else:
        load_from, task, pre, name = str(source), "causal-lm", _pre_tokenizer(str(source)), None
        inputs = [Input(Path(source), "the model being exported")] if Path(source).exists() else []
        data = DataSpec()
    destination = check_output_file(destination, ".gguf", inputs, overwrite)
    if save_imatrix is not None:
        save_imatrix = check_output_file(save_imatrix, ".gguf", inputs, overwrite)
    loaded = yield from iter_load_model(load_from, task, trust_remote_code=False, device=device)
    model = loaded.model.to("cpu")
    imatrix_path = None
    with journaled(Path(f"{partial_path(destination)}.imatrix.gguf")) as scratch:
        try:
            if imatrix and imatrix_file is not None:
                imatrix_path = Path(imatrix_file)
            elif imatrix:
                calibration = settings.calibration or data.calibration
                texts = load_texts(calibration, settings.text_column if settings.calibration else data.text_column)
                imatrix_path = Path(save_imatrix) if save_imatrix is not None else scratch
                yield from iter_imatrix_file(model, loaded.tokenizer, imatrix_path, texts, dataset=calibration,
                                             sequence_length=settings.sequence_length or data.sequence_length,
                                             windows=settings.windows or data.calibration_windows, device=device)
            if written_by_our_writer(getattr(model.config, "model_type", None)):
                written = yield from iter_quantized_gguf(model, loaded.tokenizer, destination, quant, pre=pre,
                                                         name=name, imatrix=imatrix_path, keep_embedding=keep_embedding)
            else:  # other families: llama.cpp's own converter, then the same quantizer
                written = yield from iter_converted_gguf(model, loaded.tokenizer, destination, quant,
                                                         imatrix=imatrix_path, keep_embedding=keep_embedding,
                                                         extras_from=load_from if Path(load_from).is_dir() else None,
                                                         name=name)
        finally:
            scratch.unlink(missing_ok=True)
    yield Log(f"Wrote {destination} ({written['bytes'] / 1e6:.1f} MB, {quant}"
              f"{', with our importance matrix' if imatrix else ''})")
    return written
