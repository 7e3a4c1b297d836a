"""Exporting a run's output folder: describe it, copy it elsewhere, write GGUF, recipe and report files.

Every writer here is atomic: a folder is built in a hidden temporary folder and renamed into
place (:func:`core.io.saving.atomic_folder`), a file is written to a hidden temporary name and
renamed; a failure or a cancel leaves nothing half-written.  The jobs are generators of events
(every ``yield`` is a cancel point), so the app runs them in a worker and the CLI prints them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import StudioError
from core.eval.compare import read_output_folder
from core.events import Log, Progress
from core.io.atomic import atomic_file
from core.io.output_rules import Input, OutputError, check_output_dir, check_output_file
from core.io.saving import atomic_folder
from core.models.formats import get_format, read_manifest
from core.models.loading import iter_load_model, resolve_source

GGUF_TYPES = {"F16": "16-bit floats: the largest file, no quality loss",
              "Q8_0": "8-bit blocks: about half of F16, nearly no quality loss",
              "Q4_0": "4-bit blocks: about a quarter of F16, some quality loss"}


@dataclass
class OutputInfo:
    """What an output folder holds and who can load it."""

    folder: Path
    format: str  # "transformers" or the name of one of our saved formats
    description: str
    plain_transformers: bool
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    gguf_problem: str | None = None  # why GGUF export does not apply, or None when it does
    architecture: str = ""

    def loads_in(self) -> str:
        """One sentence a person can act on."""
        if self.plain_transformers and self.format == "transformers":
            return "Loads in plain transformers (AutoModelForCausalLM.from_pretrained) and in this app."
        if self.plain_transformers:
            return (f"Saved as {self.format}: loads in plain transformers (with the packages its config names) "
                    "and in this app.")
        return (f"Saved as {self.format}: only this app (or its core package) loads it; plain transformers "
                "does not know these layers.")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _on_gguf_blocks(quantization: dict[str, Any]) -> bool:
    """A pack-quantized folder whose every layer group is symmetric 4- or 8-bit in groups of 32: the shape of
    llama.cpp's Q4_0 / Q8_0 blocks (e.g. the ``qat`` step's q4_0 grid)."""
    groups = quantization.get("config_groups") or {}
    weights = [group.get("weights") or {} for group in groups.values()]
    return (quantization.get("format") == "pack-quantized" and bool(weights)
            and all(w.get("symmetric") and w.get("num_bits") in (4, 8) and w.get("group_size") == 32 for w in weights))


def gguf_problem(config: dict[str, Any], manifest: dict[str, Any] | None, replaceable: bool = True) -> str | None:
    """Why a model with this config.json / manifest cannot be written as GGUF, or None."""
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if not model_type or (architectures and not any(str(name).endswith("ForCausalLM") for name in architectures)):
        return (f"GGUF export writes causal language models (…ForCausalLM); this one is {model_type or 'unknown'!r} "
                f"({', '.join(architectures) or 'no architecture named'}). Use the transformers folder instead.")
    if config.get("quantization_config"):
        if model_type in ("llama", "qwen2") and _on_gguf_blocks(config["quantization_config"]):
            return None  # quantization-aware training on Q4_0 / Q8_0 blocks: written unchanged (checked per tensor)
        return ("this folder is already quantized, on a grid that is not a GGUF type's blocks, so GGUF would round "
                "its weights a second time; export GGUF from a float or pruned result (GGUF applies its own "
                "quantization), or train with the qat step on the q4_0 or q8_0 grid, which exports unchanged")
    if manifest is not None and not replaceable:
        return (f"its layers were replaced ({manifest.get('format')}); GGUF needs plain float layers. Export GGUF "
                "from a float or pruned result: GGUF applies its own quantization")
    return None


def describe_output(folder: str | Path) -> OutputInfo:
    """Describe a run's output folder: its saved format, whether plain transformers loads it, GGUF."""
    folder = Path(folder).expanduser()
    read_output_folder(folder)  # refuses folders that are not a run's output
    manifest = read_manifest(folder)
    config = _read_json(folder / "config.json")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    size = sum((folder / f).stat().st_size for f in files)
    architecture = ", ".join(config.get("architectures") or []) or str(config.get("model_type", ""))
    if manifest is None:
        return OutputInfo(folder, "transformers", "safetensors weights and config, as transformers saves them",
                          True, files, size, gguf_problem(config, None), architecture)
    saved = get_format(manifest["format"])
    return OutputInfo(folder, saved.name, saved.description, saved.plain_transformers, files, size,
                      gguf_problem(config, manifest, saved.replaceable), architecture)


def iter_copy_output(folder: str | Path, destination: str | Path, overwrite: bool = False,
                     ) -> Generator[Any, None, Path]:
    """Copy the output folder to ``destination`` atomically, file by file, yielding progress."""
    source = Path(folder).expanduser().resolve()
    read_output_folder(source)
    target = check_output_dir(destination, [Input(source, "the result folder being copied")], overwrite)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files) or 1
    done = 0
    with atomic_folder(target, overwrite) as partial:
        for path in files:
            yield Progress("copying", done, total)
            out = partial / path.relative_to(source)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)
            done += path.stat().st_size
        yield Progress("copying", total, total)
    yield Log(f"Copied {len(files)} files to {target}")
    return target


def write_text_atomic(path: str | Path, text: str, replaceable: Callable[[Path], bool] | None = None) -> Path:
    """Write ``text`` to ``path`` via a hidden temporary file in the same folder, then rename.

    ``replaceable``: when given, an existing file is replaced only if it returns True for it (a file
    this app wrote); otherwise the person already confirmed the replacement in a save dialog.
    """
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise OutputError(f"the folder {path.parent} does not exist; create it or choose another place")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; choose a file name")
    if replaceable is not None and path.exists() and not replaceable(path):
        raise OutputError(f"{path} exists and this app did not write it, so it is never replaced: choose "
                          "another file name")
    with atomic_file(path, f"writing {path.name}") as partial:
        partial.write_text(text, encoding="utf-8")
    return path


def save_recipe(folder: str | Path, destination: str | Path) -> Path:
    """Write the run's recipe (YAML) to ``destination``; the CLI runs it with ``compression-studio-cli run``."""
    return write_text_atomic(destination, read_output_folder(folder).recipe_yaml)


DEFAULT_PRE_TOKENIZER = "gpt-2"  # llama.cpp's name for GPT-2's byte-level split ("gpt2" it refuses to load)


def _pre_tokenizer(teacher_source: str) -> str:
    """llama.cpp's pre-tokenizer name: the teacher's own when it came from a GGUF file, else "gpt-2"."""
    try:
        kind, where = resolve_source(teacher_source)
        if kind in ("gguf", "bundled"):
            import gguf

            field_ = gguf.GGUFReader(str(where)).get_field("tokenizer.ggml.pre")
            if field_ is not None:
                return str(field_.contents())
    except Exception:  # the teacher may have moved; "gpt-2" is the plain byte-level default
        pass
    return DEFAULT_PRE_TOKENIZER


def iter_export_gguf(folder: str | Path, destination: str | Path, quant: str = "Q8_0",
                     device: str = "cpu", overwrite: bool = False,
                     quantize_embedding: bool = True) -> Generator[Any, None, dict[str, Any]]:
    """Load the output folder with our loader and write it as one GGUF file (atomically).

    ``quantize_embedding``: the token embedding in ``quant`` too (llama.cpp's default), else F16.

    ``destination`` must end in ``.gguf`` and lie outside ``folder``; an existing file is replaced
    only with ``overwrite`` and only if this app exported it (see :mod:`core.io.output_rules`).
    """
    if quant not in GGUF_TYPES:
        raise StudioError(f"unknown GGUF type {quant!r}; choose one of {', '.join(GGUF_TYPES)}")
    info = describe_output(folder)
    if info.gguf_problem:
        raise StudioError(f"GGUF export does not apply to this result: {info.gguf_problem}")
    destination = check_output_file(destination, ".gguf", [Input(info.folder, "the result folder being exported")],
                                    overwrite)
    run = read_output_folder(folder)
    loaded = yield from iter_load_model(str(info.folder), run.task, trust_remote_code=False, device=device)
    yield Progress("writing GGUF", 0, 1)
    # lazy: the Export screen imports this module at start; numpy and torch load only when a GGUF is written
    from core.io.gguf_convert import iter_converted_gguf, written_by_our_writer
    from core.io.gguf_export import export_gguf

    if not written_by_our_writer(getattr(loaded.model.config, "model_type", None)):
        # Gemma, Qwen3, Mistral, Phi-3, ...: llama.cpp's own converter, then its quantizer for the type
        written = yield from iter_converted_gguf(loaded.model.to("cpu"), loaded.tokenizer, destination, quant,
                                                 keep_embedding=not quantize_embedding, extras_from=info.folder,
                                                 name=run.report.get("recipe") or None)
        yield Log(f"Wrote {destination} ({written['bytes'] / 1e6:.1f} MB, {quant}, llama.cpp's converter)")
        return written

    written = export_gguf(loaded.model.to("cpu"), loaded.tokenizer, destination, quant,
                          pre=_pre_tokenizer(run.teacher_source), name=run.report.get("recipe") or None,
                          quantize_embedding=quantize_embedding)
    yield Progress("writing GGUF", 1, 1)
    yield Log(f"Wrote {destination} ({written['bytes'] / 1e6:.1f} MB, {quant})")
    return written
