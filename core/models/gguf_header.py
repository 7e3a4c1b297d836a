"""What a GGUF file stores its weights as ("Q4_1", 4 bits), read from the start of its header only.

``gguf.GGUFReader`` parses the whole header, the tokenizer's 49k tokens included (about 2 s for the
bundled SmolLM2), just to answer one number.  ``general.file_type`` (llama.cpp's ``LlamaFileType``)
sits among the first metadata entries, so :func:`gguf_file_type` walks the key/value entries from the
start of the file and stops there: a few kilobytes read.  A file without that entry, of GGUF
version 1, or cut short gives None (nothing is guessed).
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import gguf

FILE_TYPE_KEY = "general.file_type"
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_ENTRIES = 10_000  # a sane header has a few dozen; more means the file is not what it claims


@dataclass(frozen=True)
class GGUFStorage:
    """How a GGUF file stores most of its weights: ``kind`` "Q4_1", "Q8_0", "F16", "BF16", "F32"…,
    and the bits per weight that name stands for (4 for every 4-bit kind; block scales come on top)."""

    kind: str
    bits: int | None

    @property
    def quantized(self) -> bool:
        return self.bits is not None and self.bits < 16

    @property
    def words(self) -> str:
        """'4-bit GGUF Q4_1', '16-bit GGUF F16', or 'GGUF type 99' when the bits are unknown."""
        return f"{self.bits}-bit GGUF {self.kind}" if self.bits else f"GGUF {self.kind}"


def _read(handle: BinaryIO, fmt: str, order: str):
    size = struct.calcsize(order + fmt)
    data = handle.read(size)
    if len(data) != size:
        raise EOFError
    return struct.unpack(order + fmt, data)[0]


def _string(handle: BinaryIO, order: str) -> bytes:
    length = _read(handle, "Q", order)
    if length > 1 << 24:
        raise ValueError("implausible string length")
    data = handle.read(length)
    if len(data) != length:
        raise EOFError
    return data


def _skip_value(handle: BinaryIO, value_type: int, order: str) -> None:
    if value_type in _SCALARS:
        handle.seek(struct.calcsize(order + _SCALARS[value_type]), 1)
    elif value_type == _STRING:
        handle.seek(_read(handle, "Q", order), 1)
    elif value_type == _ARRAY:
        item_type, count = _read(handle, "I", order), _read(handle, "Q", order)
        if item_type in _SCALARS:
            handle.seek(struct.calcsize(order + _SCALARS[item_type]) * count, 1)
        else:
            for _ in range(count):
                _skip_value(handle, item_type, order)
    else:
        raise ValueError(f"unknown GGUF value type {value_type}")


def gguf_file_type(path: str | Path) -> int | None:
    """``general.file_type`` of a GGUF file, read from the header's first entries; None if absent or unreadable.

    Kept per file version (path, size, modification time), so asking again costs nothing."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return _file_type(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _file_type(path: str, _size: int, _mtime_ns: int) -> int | None:
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"GGUF":
                return None
            order = "<"
            version = _read(handle, "I", order)
            if version > 0xFFFF:  # a big-endian file
                order = ">"
                version = struct.unpack(">I", struct.pack("<I", version))[0]
            if version < 2:
                return None
            _read(handle, "Q", order)  # tensor count
            entries = _read(handle, "Q", order)
            for _ in range(min(entries, _MAX_ENTRIES)):
                key = _string(handle, order)
                value_type = _read(handle, "I", order)
                if key == FILE_TYPE_KEY.encode() and value_type in _SCALARS and value_type not in (6, 7, 12):
                    return int(_read(handle, _SCALARS[value_type], order))
                _skip_value(handle, value_type, order)
    except (OSError, EOFError, ValueError, struct.error):
        return None
    return None


def storage_of(file_type: int | None) -> GGUFStorage | None:
    """The kind and bits of a llama.cpp file type: 3 -> Q4_1, 4 bits; 1 -> F16, 16 bits; None for None."""
    if file_type is None:
        return None
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return GGUFStorage(f"type {file_type}", None)
    kind = name.removeprefix("MOSTLY_").removeprefix("ALL_")
    if kind in ("F32", "F16", "BF16"):
        return GGUFStorage(kind, 32 if kind == "F32" else 16)
    digits = re.match(r"^(?:I?Q|TQ)(\d)_", kind)
    return GGUFStorage(kind, int(digits.group(1)) if digits else None)


def gguf_storage(path: str | Path) -> GGUFStorage | None:
    """How the GGUF file at ``path`` stores its weights, or None when its header does not say."""
    return storage_of(gguf_file_type(path))
