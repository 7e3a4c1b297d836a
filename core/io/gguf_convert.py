"""GGUF export of the model families our own writer does not cover (Gemma 2/3, Qwen3, Mistral, Phi-3, ...), through
llama.cpp's own Hugging Face converter.

Our writer (:mod:`core.io.gguf_export`) covers Llama and Qwen2 (and layers already on llama.cpp's Q4_0 / Q8_0
blocks).  Every other family goes through ``convert_hf_to_gguf.py``, which the project's set-up (``make llama-cpp``,
``packaging/build_llama_cpp.sh``) extracts from llama-cpp-python's source distribution, with the ``gguf-py`` of the
same llama.cpp version, into ``<venv>/llama.cpp/convert``:

1. the model (float or pruned: plain Linear layers) and its tokenizer are saved as a safetensors folder in a hidden
   temporary folder next to the destination;
2. the converter runs on it in a subprocess (``--outtype f16``) into a hidden temporary ``.gguf``;
3. ``llama-quantize`` writes the chosen type from it (F16 included, so every type takes one path), with our
   importance matrix when given, and adds the metadata key that marks the file as this app's;
4. the result is renamed into place.  A failure or a cancel (closing the generator kills the running process)
   leaves none of the temporary files behind, and a failure is one :class:`StudioError` line.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

from core.errors import StudioError
from core.events import Progress
from core.io.atomic import atomic_file
from core.io.gguf_export import ARCHITECTURES
from core.io.gguf_quantize import iter_quantize_file
from core.io.gguf_types import GGUF_TYPE_INFO
from core.io.llama_cpp_tools import TOOLS_ENV, build_folder, require_tool, run_command
from core.io.output_rules import GGUF_MARK_KEY
from core.partials import journaled, remove_path

CONVERTER = "convert_hf_to_gguf.py"
# files a tokenizer may need beside what save_pretrained writes (a SentencePiece model: Gemma, Phi-3, Mistral)
TOKENIZER_EXTRAS = ("tokenizer.model",)


def converter_script() -> Path | None:
    """The path of llama.cpp's ``convert_hf_to_gguf.py``: in ``$COMPRESSION_STUDIO_LLAMA_CPP/../convert`` when that
    variable names a tools folder, else where the project's set-up extracts it (``<venv>/llama.cpp/convert``)."""
    folders = [Path(os.environ[TOOLS_ENV]).expanduser().parent / "convert"] if os.environ.get(TOOLS_ENV) else []
    folders.append(build_folder().parent / "convert")
    for folder in folders:
        if (folder / CONVERTER).is_file() and (folder / "conversion").is_dir():
            return folder / CONVERTER
    return None


def require_converter() -> Path:
    """The converter's path, or a StudioError saying how to get it."""
    script = converter_script()
    if script is None:
        raise StudioError(f"llama.cpp's {CONVERTER} was not found: run `make llama-cpp` (extracts it into "
                          f"{build_folder().parent / 'convert'})")
    return script


def written_by_our_writer(model_type: str | None) -> bool:
    """Whether our own GGUF writer covers this family (else llama.cpp's converter does)."""
    return model_type in ARCHITECTURES


def iter_convert_folder(folder: str | Path, path: str | Path, outtype: str = "f16", name: str | None = None,
                        ) -> Generator[Any, None, Path]:
    """Run llama.cpp's converter on a float safetensors model folder into ``path`` (a ``.gguf``), atomically:
    written under a hidden name and renamed when complete (``name``: the model's name in the file, else the
    file's).  Yields events (cancel points); returns ``path``."""
    script = require_converter()
    path = Path(path)
    with atomic_file(path, "writing the GGUF file") as partial:
        # the converter's own gguf-py (beside it) is the one it is written for; no download, no remote code
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("NO_LOCAL_GGUF", None)
        yield from run_command([sys.executable, str(script), str(folder), "--outfile", str(partial), "--outtype",
                                outtype, "--model-name", name or path.stem], doing="converting to GGUF with llama.cpp's convert_hf_to_gguf.py",
                               env=env, label=CONVERTER)
        if not partial.is_file():
            raise StudioError(f"{CONVERTER} finished without writing {partial.name}")
    return path


def save_float_folder(model: Any, tokenizer: Any, folder: Path, extras_from: str | Path | None = None) -> None:
    """Save ``model`` (plain float layers) and its tokenizer as safetensors into ``folder``, with the tokenizer files
    save_pretrained may not write (``tokenizer.model``) copied from ``extras_from`` when it has them."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if extras_from is not None:
        for name in TOKENIZER_EXTRAS:
            source = Path(extras_from) / name
            if source.is_file() and not (folder / name).exists():
                shutil.copyfile(source, folder / name)


def iter_converted_gguf(model: Any, tokenizer: Any, path: str | Path, quant: str, *,
                        imatrix: str | Path | None = None, keep_embedding: bool = False,
                        extras_from: str | Path | None = None, threads: int | None = None, name: str | None = None,
                        ) -> Generator[Any, None, dict[str, Any]]:
    """Write ``model`` (any family llama.cpp's converter knows) as a GGUF of type ``quant`` at ``path``: converter to
    F16, then ``llama-quantize`` (``imatrix``: an importance-matrix GGUF; ``keep_embedding``: token embedding F16;
    ``extras_from``: a folder whose ``tokenizer.model`` to add; ``name``: the model's name, else the file's).
    Yields progress (cancel points); returns path, bytes, quant, architecture and the quantizer's seconds."""
    if quant not in GGUF_TYPE_INFO:
        raise StudioError(f"unknown GGUF type {quant!r}; choose one of {', '.join(GGUF_TYPE_INFO)}")
    path = Path(path)
    if path.suffix.lower() != ".gguf":
        raise StudioError(f"{path.name}: a GGUF file name must end in .gguf")
    if not path.parent.is_dir():
        raise StudioError(f"the folder {path.parent} does not exist; create it or choose another place")
    if imatrix is not None and not Path(imatrix).is_file():
        raise StudioError(f"the importance matrix {imatrix} does not exist")
    if any(hasattr(module, "dequantized_weight") for module in model.modules()):
        raise StudioError(f"this model's layers are already quantized; {quant} would round them a second time: "
                          "export a float (or pruned) result")
    require_converter()
    require_tool("llama-quantize")  # both before any work: one line saying how to get them
    yield Progress("writing GGUF", 0, 3)
    with atomic_file(path, "writing the GGUF file") as out_partial, \
            journaled(Path(f"{out_partial}.model")) as folder, journaled(Path(f"{out_partial}.f16.gguf")) as base:
        try:
            folder.mkdir()
            save_float_folder(model, tokenizer, folder, extras_from)
            yield Progress("writing GGUF", 1, 3)
            yield from iter_convert_folder(folder, base, "f16", name or path.stem)
            remove_path(folder)  # the float copy is no longer needed: free the disk before quantizing
            yield Progress("writing GGUF", 2, 3)
            seconds = yield from iter_quantize_file(base, out_partial, quant, imatrix=imatrix,
                                                    keep_embedding=keep_embedding, threads=threads,
                                                    extra_args=["--override-kv", f"{GGUF_MARK_KEY}=str:1"])
        finally:
            remove_path(folder)
            base.unlink(missing_ok=True)
    yield Progress("writing GGUF", 3, 3)
    return {"path": str(path), "bytes": path.stat().st_size, "quant": quant, "quantize_seconds": seconds,
            "architecture": getattr(model.config, "model_type", None),
            "imatrix": str(imatrix) if imatrix is not None else None}
