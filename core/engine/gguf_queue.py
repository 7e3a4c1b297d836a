"""Several GGUF types of one result in one go: a queue of exports, one importance matrix for all of them.

``iter_gguf_queue`` is what ``export-gguf RESULT -o model.gguf --type Q4_K_M,Q5_K_M --imatrix`` and the Export
page run.  The types are written one after another by :func:`core.engine.gguf_job.iter_gguf_export`; the
importance matrix is computed by the first type that uses it and handed to the others, so the calibration
pass runs once per queue.  Each file is atomic (a cancel or a failure removes the one being written; finished
ones stay), and after each one the Ollama Modelfiles and the README card next to the files are (re)written to
describe every file finished so far (:mod:`core.io.gguf_cards`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.engine.gguf_job import ImatrixSettings, iter_gguf_export
from core.errors import StudioError
from core.eval.compare import OutputFolderError, read_output_folder
from core.events import Log
from core.io.gguf_cards import (
    README_NAME,
    check_card_file,
    modelfile_path,
    modelfile_text,
    read_gguf_facts,
    readme_text,
    write_card,
)
from core.io.gguf_types import GGUF_TYPE_INFO
from core.io.llama_cpp_tools import require_tool
from core.io.output_rules import Input, check_output_file, resolved
from core.partials import journaled, partial_path


@dataclass(frozen=True)
class QueueItem:
    """A file of the queue starting (``done`` False) or written (``done`` True, with its size)."""

    index: int
    total: int
    quant: str
    path: str
    done: bool = False
    bytes: int = 0


def parse_types(types: str | Iterable[str]) -> list[str]:
    """``"Q4_K_M,q5_k_m"`` (or a list) -> ``["Q4_K_M", "Q5_K_M"]``; an unknown name is one StudioError line."""
    names = [t.strip() for t in (types.split(",") if isinstance(types, str) else types) if t.strip()]
    known = {name.upper(): name for name in GGUF_TYPE_INFO}
    unknown = [name for name in names if name.upper() not in known]
    if unknown:
        raise StudioError(f"unknown GGUF type {unknown[0]!r}; choose from {', '.join(GGUF_TYPE_INFO)} "
                          "(several separated by commas)")
    if not names:
        raise StudioError(f"no GGUF type given; choose from {', '.join(GGUF_TYPE_INFO)}")
    return list(dict.fromkeys(known[name.upper()] for name in names))


def queue_destinations(output: str | Path, quants: list[str]) -> dict[str, Path]:
    """Where each type goes: ``output`` itself for one type; ``<stem>-<TYPE>.gguf`` next to it for several."""
    output = Path(output)
    if len(quants) == 1:
        return {quants[0]: output}
    return {quant: output.with_name(f"{output.stem}-{quant}{output.suffix}") for quant in quants}


def card_paths(destinations: Iterable[Path]) -> list[Path]:
    """The Modelfile of each GGUF and the README card of the folder they are in."""
    destinations = list(destinations)
    return [modelfile_path(path) for path in destinations] + [destinations[0].parent / README_NAME]


def _source_card(source: str | Path) -> dict[str, Any]:
    try:
        run = read_output_folder(source)
    except OutputFolderError:
        return {"name": str(source).split(":")[-1].rstrip("/").split("/")[-1], "folder": str(source)}
    return {"name": Path(run.folder).name, "folder": str(run.folder), "report": run.report}


def _imatrix_card(path: Path) -> dict[str, Any]:
    import gguf

    reader = gguf.GGUFReader(str(path))

    def value(key: str) -> Any:
        found = reader.get_field(key)
        return found.contents() if found is not None else None

    return {"datasets": value(gguf.Keys.IMatrix.DATASETS), "chunks": value(gguf.Keys.IMatrix.CHUNK_COUNT),
            "chunk_size": value(gguf.Keys.IMatrix.CHUNK_SIZE)}


def write_cards(files: list[Path], source: dict[str, Any], imatrix: dict[str, Any] | None, overwrite: bool,
                perplexity: tuple[dict[str, float], str | None] = ({}, None)) -> list[Path]:
    """The Modelfile of each GGUF in ``files`` and one README card for all of them; returns what was written.
    ``perplexity``: (type -> llama.cpp's perplexity, how it was measured), where measured."""
    facts = [read_gguf_facts(path) for path in files]
    written = [write_card(modelfile_path(f.path), modelfile_text(f), overwrite) for f in facts]
    card = readme_text(facts, source, imatrix=imatrix, perplexity=perplexity[0], perplexity_how=perplexity[1])
    written.append(write_card(files[0].parent / README_NAME, card, overwrite))
    return written


@dataclass(frozen=True)
class PerplexitySettings:
    """llama.cpp's perplexity of each file (``llama-perplexity``): ``chunks`` of ``context`` tokens of ``text``
    (None: the result's own evaluation text, else the bundled held-out text)."""

    chunks: int
    context: int = 512
    text: str | None = None


def _held_out_file(settings: PerplexitySettings, card_source: dict[str, Any], folder: Path) -> tuple[Path, str]:
    """The held-out text as one plain file llama-perplexity reads (documents joined by blank lines)."""
    from core.data.texts import load_texts
    from core.engine.recipe import recipe_from_text

    name, column = settings.text or "bundled:wiki-evaluation", "text"
    if settings.text is None and card_source.get("report"):
        data = recipe_from_text(read_output_folder(card_source["folder"]).recipe_yaml).data
        name, column = data.evaluation, data.text_column
    path = folder / "held-out.txt"
    path.write_text("\n\n".join(load_texts(name, column)) + "\n", encoding="utf-8")
    return path, name


def _measured(path: Path, held_out: Path, settings: PerplexitySettings) -> Generator[Any, None, float]:
    from core.io.llama_cpp_tools import perplexity

    yield Log(f"Measuring {path.name} with llama-perplexity ({settings.chunks} chunks of {settings.context} tokens)")
    return float(perplexity(path, held_out, settings.context, settings.chunks)["perplexity"])


def iter_gguf_queue(source: str | Path, output: str | Path, types: str | Iterable[str], *, imatrix: bool = False,
                    settings: ImatrixSettings | None = None, save_imatrix: str | Path | None = None,
                    overwrite: bool = False, keep_embedding: bool = False, device: str = "cpu",
                    cards: bool = True, measure: PerplexitySettings | None = None,
                    ) -> Generator[Any, None, dict[str, Any]]:
    """Write ``source`` as one GGUF per type in ``types``, one after another (see the module docstring).

    ``output``: the file for a single type, else the name the types are appended to (``model-Q4_K_M.gguf``).
    ``cards``: also write the Modelfiles and the README card.  ``measure``: also llama.cpp's perplexity of each
    file on held-out text, in the results and the card (one llama-perplexity run per file, waited for: a cancel
    takes effect when it ends).  Every destination is checked before any work.
    Yields :class:`QueueItem` events around each file and its export's progress; returns ``files`` (each
    file's result), ``cards`` (paths written) and ``imatrix`` (where the matrix was kept, with ``save_imatrix``).
    """
    quants = parse_types(types)
    destinations = {q: resolved(p) for q, p in queue_destinations(output, quants).items()}
    if measure is not None:
        require_tool("llama-perplexity")  # before any work: one line saying how to get it
    card_source = _source_card(source)
    label = "the result folder being exported" if card_source.get("report") else "the model being exported"
    inputs = [Input(Path(source), label)] if Path(source).exists() else []
    for path in destinations.values():
        check_output_file(path, ".gguf", inputs, overwrite)
    if cards:
        for path in card_paths(destinations.values()):
            check_card_file(path, overwrite)
    if save_imatrix is not None and not imatrix:
        raise StudioError("--save-imatrix needs --imatrix: there is no importance matrix to save without it")
    first = next(iter(destinations.values()))
    files: list[dict[str, Any]] = []
    written_cards: list[Path] = []
    matrix: Path | None = None
    measured: dict[str, float] = {}
    with journaled(Path(f"{partial_path(first)}.queue-imatrix.gguf")) as scratch, \
            tempfile.TemporaryDirectory(prefix="gguf-queue-") as work:
        held_out = _held_out_file(measure, card_source, Path(work)) if measure is not None else None
        try:
            for index, (quant, path) in enumerate(destinations.items()):
                yield QueueItem(index, len(quants), quant, str(path))
                if len(quants) > 1:
                    yield Log(f"GGUF {index + 1} of {len(quants)}: {quant} -> {path}")
                use = imatrix and quant != "F16"  # F16 rounds nothing, so there is nothing to weigh
                if use and matrix is None:  # the first type that needs it computes it, once for the queue
                    keep = Path(save_imatrix) if save_imatrix is not None else scratch
                    result = yield from iter_gguf_export(source, path, quant, imatrix=True, settings=settings,
                                                         save_imatrix=keep, overwrite=overwrite,
                                                         keep_embedding=keep_embedding, device=device)
                    matrix = keep
                else:
                    result = yield from iter_gguf_export(source, path, quant, imatrix=use, settings=settings,
                                                         imatrix_file=matrix if use else None, overwrite=overwrite,
                                                         keep_embedding=keep_embedding, device=device)
                result = {**result, "quant": quant, "imatrix": str(matrix) if use else None}
                if held_out is not None:
                    measured[quant] = yield from _measured(path, held_out[0], measure)
                    result["perplexity"] = measured[quant]
                files.append(result)
                if cards:  # rewritten after each file: a cancel later leaves cards that describe what is there
                    imatrix_info = _imatrix_card(matrix) if matrix is not None else None
                    how = (f"{measure.chunks} chunks of {measure.context} tokens of {held_out[1]}"
                           if held_out is not None else None)
                    written_cards = write_cards([Path(f["path"]) for f in files], card_source, imatrix_info,
                                                overwrite=True if written_cards else overwrite,
                                                perplexity=(measured, how))
                yield QueueItem(index, len(quants), quant, str(path), done=True, bytes=int(result["bytes"]))
        finally:
            scratch.unlink(missing_ok=True)
    return {"files": files, "cards": [str(p) for p in written_cards],
            "imatrix": str(matrix) if matrix is not None and save_imatrix is not None else None}
