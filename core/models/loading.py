"""Loading models from a hub id, a local folder, a .gguf file or the bundled default.

``iter_load_model`` is a job: it yields events (download and conversion progress, log lines) and
returns a :class:`LoadedModel`.  ``load_model`` runs it to the end.  The source is never written to.

Security: ``trust_remote_code`` is off unless the caller passes it for this model; weights are
read from safetensors, or from ``.bin`` files with ``torch.load(weights_only=True)`` (transformers'
default), never by unpickling arbitrary objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import paths
from core.background import iter_blocking
from core.errors import ModelLoadError, StudioError, is_disk_full, write_error
from core.events import Log, drain
from core.models import tokenizer_pool
from core.models.bundled import bundled_model_file
from core.models.formats import apply_load_fixes, get_format, read_manifest
from core.models.hub import iter_download
from core.partials import journaled, ordinary_permissions, partial_path

TASKS = ("causal-lm", "sequence-classification")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


@dataclass
class LoadedModel:
    """A model ready to use, with where it came from."""

    model: Any
    tokenizer: Any
    source: str
    kind: str  # "bundled", "gguf", "folder" or "hub"
    task: str
    source_path: Path  # the file or folder the weights were read from
    source_bytes: int  # bytes of the source weights on disk
    tokenizer_key: tuple | None = None  # the tokenizer's key in core.models.tokenizer_pool (see return_tokenizer)


def resolve_source(source: str) -> tuple[str, Path | str]:
    """Classify a source string: ("bundled"|"gguf"|"folder"|"hub", path or hub id)."""
    source = source.strip()
    if source.startswith("bundled:"):
        return "bundled", bundled_model_file(source.split(":", 1)[1])
    path = Path(source).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return "gguf", path
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file, not a model: open a model folder or a .gguf file")
        return "folder", path
    if _HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        return "hub", source
    raise ModelLoadError(f"model not found: {source} is neither an existing folder, a .gguf file, "
                         "nor a Hugging Face hub id like owner/name")


def _auto_class(task: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task not in TASKS:
        raise ModelLoadError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification


def check_model_folder(folder: Path) -> list[Path]:
    """Return the weight files of a model folder, or raise a ModelLoadError saying what is wrong."""
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a model folder: it has no config.json "
                             "(choose the folder that holds config.json and the weights)")
    weights = sorted(p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern))
    if not weights:
        raise ModelLoadError(f"{folder} has a config.json but no weights (*.safetensors or pytorch_model.bin)")
    return weights


def _quiet_transformers() -> None:
    """Our own events report progress; transformers' tqdm bars would only clutter the CLI and logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _load_folder(folder: Path, task: str, trust_remote_code: bool, pooled_tokenizer: bool = False):
    _quiet_transformers()

    weights = check_model_folder(folder)
    if not trust_remote_code and _needs_remote_code(folder):
        raise ModelLoadError(f"{folder} needs its own Python code to load (auto_map in config.json); allow "
                             "'trust remote code' for this model only if you trust its authors")
    has_safetensors = any(p.suffix == ".safetensors" for p in weights)
    manifest = read_manifest(folder)
    # The tokenizer first: a folder without one is reported before the (longer) weight loading.
    spare = tokenizer_pool.take(tokenizer_pool.pool_key(folder, trust_remote_code)) if pooled_tokenizer else None
    tokenizer = spare if spare is not None else _parse_tokenizer_or_explain(folder, trust_remote_code)
    report: list[str] = []
    try:
        with _transformers_log_kept(report):
            if manifest is not None:
                model = get_format(manifest["format"]).load(folder, task)
            else:
                model = _auto_class(task).from_pretrained(
                    folder, trust_remote_code=trust_remote_code, use_safetensors=has_safetensors, weights_only=True,
                    dtype="auto")
                apply_load_fixes(model)  # e.g. bitsandbytes: keep the exact CPU layout it was saved with
    except StudioError:
        raise
    except Exception as exc:  # transformers raises many types; translate the ones a person can fix
        raise _explain_load_error(exc, folder, "\n".join(report)) from exc
    return model, tokenizer, sum(p.stat().st_size for p in weights)


class _KeepRecords(logging.Handler):
    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


_LOG_LOCK = threading.Lock()


@contextmanager
def _transformers_log_kept(records: list[str]):
    """transformers prints a multi-line load report (and then raises, for a config/weights mismatch);
    keep its lines in ``records`` for our one-line message instead of printing them."""
    logger = logging.getLogger("transformers")
    with _LOG_LOCK:
        saved = logger.handlers[:]
        logger.handlers = [_KeepRecords(records)]
        try:
            yield
        finally:
            logger.handlers = saved


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model")


def _parse_tokenizer_or_explain(folder: Path, trust_remote_code: bool) -> Any:
    """The folder's tokenizer, or one line saying which files are missing or unreadable."""
    try:
        return _parse_tokenizer(folder, trust_remote_code)
    except Exception as exc:
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ModelLoadError(f"{folder} has no tokenizer: none of {', '.join(TOKENIZER_FILES)} is there "
                                 "(vocab.json also needs merges.txt); copy the tokenizer files of the original "
                                 "model into this folder") from exc
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ModelLoadError(f"the tokenizer files in {folder} cannot be read ({first}); copy them again from "
                             "the original model") from exc


def _parse_tokenizer(folder: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stock_spare_tokenizer(loaded: LoadedModel) -> None:
    """Parse a second tokenizer for ``loaded``'s folder into the pool, for the next run to take.

    Call it while no compression runs (the app does after a Model-page load): the parse holds the GIL.
    """
    if loaded.tokenizer_key is not None:
        _stock_spare(Path(loaded.tokenizer_key[0]), loaded.tokenizer_key[1])


def stock_spare_tokenizer_for(source: str) -> bool:
    """Parse a spare tokenizer for ``source`` if its files are already here (a folder, or a GGUF
    converted before); nothing is downloaded or converted.  Returns whether a spare is waiting."""
    try:
        kind, where = resolve_source(source)
    except StudioError:
        return False
    if kind == "folder":
        folder = Path(where)
    elif kind in ("gguf", "bundled") and Path(where).is_file():
        folder = gguf_cache_folder(Path(where))
    else:
        return False
    if not (folder / "config.json").is_file():
        return False
    try:
        _stock_spare(folder, False)
    except Exception:  # a folder without a usable tokenizer: loading it reports that itself
        return False
    return True


def _stock_spare(folder: Path, trust_remote_code: bool) -> None:
    key = tokenizer_pool.pool_key(folder, trust_remote_code)
    if not tokenizer_pool.has_spare(key):
        tokenizer_pool.give(key, _parse_tokenizer(folder, trust_remote_code))


def return_tokenizer(loaded: LoadedModel) -> None:
    """Give ``loaded``'s tokenizer to the pool; its owner must not use it afterwards."""
    if loaded.tokenizer_key is not None:
        tokenizer_pool.give(loaded.tokenizer_key, loaded.tokenizer)


def _needs_remote_code(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder / 'config.json'} is not valid JSON; the model folder is damaged") from exc
    return isinstance(config, dict) and bool(config.get("auto_map"))


_MISMATCH_LINE = re.compile(r"^([^|\n]+?)\s*\|\s*MISMATCH.*ckpt:\s*torch\.Size\((\[[^\]]*\])\).*model:\s*"
                            r"torch\.Size\((\[[^\]]*\])\)", re.MULTILINE)


def _explain_load_error(exc: Exception, where: Path | str, report: str = "") -> ModelLoadError:
    """One line a person can act on for a failed load; ``report`` is transformers' load report, if any."""
    text = str(exc)
    lowered = text.lower()
    mismatch = _MISMATCH_LINE.search(re.sub(r"\x1b\[[0-9;]*m", "", report))  # without terminal colours
    if mismatch or "ignore_mismatched_sizes" in lowered:
        example = (f" ({mismatch.group(1)} is {mismatch.group(2)} in the weights but {mismatch.group(3)} by "
                   "config.json)") if mismatch else ""
        return ModelLoadError(f"the weights in {where} do not match its config.json{example}: config.json was "
                              "changed or belongs to another model; copy the model folder again")
    if "trust_remote_code" in lowered:
        return ModelLoadError(f"{where} needs its own Python code to load; allow 'trust remote code' for "
                              "this model only if you trust its authors")
    if any(k in lowered for k in ("safetensor", "header", "deserializ", "incomplete", "invalid load key",
                                  "unpickl", "pickle", "failed to read", "unexpected eof")):
        return ModelLoadError(f"the weights in {where} are damaged or incomplete ({text.splitlines()[0][:120]}); "
                              "copy or download the model again")
    if "unrecognized" in lowered or "model_type" in lowered or "does not recognize" in lowered:
        return ModelLoadError(f"{where} holds a model type this version of transformers does not know: "
                              f"{text.splitlines()[0][:160]}")
    if "size mismatch" in lowered or "shape" in lowered:
        return ModelLoadError(f"the weights in {where} do not match its config.json: {text.splitlines()[0][:160]}")
    return ModelLoadError(f"could not load {where}: {text.splitlines()[0][:200] if text else type(exc).__name__}")


def gguf_cache_folder(gguf_file: Path) -> Path:
    """Cache folder for a converted GGUF, keyed by the file's path, size and modification time."""
    stat = gguf_file.stat()
    key = hashlib.sha256(f"{gguf_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    return paths.cache_dir() / "gguf" / f"{gguf_file.stem}-{key}"


def _convert_gguf(gguf_file: Path, task: str) -> Generator[Any, None, Path]:
    """Dequantize a GGUF through transformers once and cache it as a safetensors folder."""
    cached = gguf_cache_folder(gguf_file)
    if (cached / "config.json").is_file():
        return cached
    yield Log(f"Converting {gguf_file.name} to a transformers model (once; later loads use the cache)")
    counter = {"done": 0, "total": 0}
    yield from iter_blocking(lambda: _write_gguf_cache(gguf_file, task, cached, counter),
                             f"Converting {gguf_file.name}", progress=lambda: (counter["done"], counter["total"]))
    return cached


_GGUF_PATCH_LOCK = threading.Lock()


@contextmanager
def _count_gguf_tensors(counter: dict[str, int]):
    """transformers' GGUF reader loops over tensors with a bare tqdm bar; count them for our events instead."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    def counting(iterable, **_ignored):
        counter["total"] = len(iterable)
        for item in iterable:
            yield item
            counter["done"] += 1

    with _GGUF_PATCH_LOCK:
        original = gguf_utils.tqdm
        gguf_utils.tqdm = counting
        try:
            yield
        finally:
            gguf_utils.tqdm = original


def _write_gguf_cache(gguf_file: Path, task: str, cached: Path, counter: dict[str, int]) -> None:
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        with _count_gguf_tensors(counter):
            model = _auto_class(task).from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    except Exception as exc:
        raise ModelLoadError(f"could not read {gguf_file} as a GGUF model: {str(exc).splitlines()[0][:200]}") from exc
    # The tensors are already dequantized to float; drop the GGUF marker so the model saves as a plain one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, cached.parent, f"converting {gguf_file.name}") from exc
    # The partial's name carries our pid and it is journaled: a conversion killed half-way is removed at
    # the next start of the app or of any command (core.partials).
    with journaled(partial_path(cached)) as partial:
        try:
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
            ordinary_permissions(partial)
            os.replace(partial, cached)
        except Exception as exc:  # a full disk reaches us as OSError or as safetensors' own error
            if (cached / "config.json").is_file():  # another process finished the same cache first
                return
            if isinstance(exc, OSError) or is_disk_full(exc):
                raise write_error(exc, cached.parent, f"converting {gguf_file.name} into the cache") from exc
            raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)


def iter_load_model(source: str, task: str = "causal-lm", trust_remote_code: bool = False,
                    device: str = "cpu", pooled_tokenizer: bool = False) -> Generator[Any, None, LoadedModel]:
    """Load a model and its tokenizer from any supported source, yielding progress events.

    ``pooled_tokenizer=True`` takes a spare tokenizer from :mod:`core.models.tokenizer_pool` when one waits
    (a run does, and gives it back with :func:`return_tokenizer` when it ends).
    """
    kind, where = resolve_source(source)
    if kind == "hub":
        folder = yield from iter_download(str(where))
        model, tokenizer, size = _load_folder(folder, task, trust_remote_code, pooled_tokenizer)
        source_path = folder
    elif kind == "gguf" or (kind == "bundled" and Path(where).is_file()):
        gguf_file = Path(where)
        folder = yield from _convert_gguf(gguf_file, task)
        trust_remote_code = False
        model, tokenizer, _ = _load_folder(folder, task, trust_remote_code, pooled_tokenizer)
        source_path, size = gguf_file, gguf_file.stat().st_size
    else:
        folder = Path(where)
        yield Log(f"Loading {folder}")
        model, tokenizer, size = _load_folder(folder, task, trust_remote_code, pooled_tokenizer)
        source_path = folder
    model.eval()
    if device != "cpu":
        model.to(device)
    yield Log(f"Loaded {type(model).__name__} from {source}")
    return LoadedModel(model, tokenizer, source, kind, task, Path(source_path), size,
                       tokenizer_pool.pool_key(Path(folder), trust_remote_code))


def load_model(source: str, task: str = "causal-lm", trust_remote_code: bool = False,
               device: str = "cpu") -> LoadedModel:
    """Load a model without watching its progress (see :func:`iter_load_model`)."""
    return drain(iter_load_model(source, task, trust_remote_code, device))
