"""llama.cpp's command-line tools (llama-quantize, llama-perplexity, llama-imatrix, llama-tokenize): where they are
and how they are run.

The project's set-up (``make data`` / ``make test``, target ``llama-cpp``) builds them from the llama.cpp source
vendored in llama-cpp-python's source distribution into ``.venv/llama.cpp/bin`` (see
``packaging/build_llama_cpp.sh``).  :func:`find_tool` looks, in order, in the folder named by the environment
variable ``COMPRESSION_STUDIO_LLAMA_CPP`` (a folder holding the tools), in that build folder, then on ``PATH``.

:func:`run_tool` runs one as a generator: each ``yield`` is a cancel point, and closing the generator kills the
process, so a cancelled export leaves no tool running.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from core.errors import StudioError
from core.events import Log

TOOLS_ENV = "COMPRESSION_STUDIO_LLAMA_CPP"
TOOLS = ("llama-quantize", "llama-perplexity", "llama-imatrix", "llama-tokenize")


def build_folder() -> Path:
    """Where the project's set-up puts the tools it builds: ``<venv>/llama.cpp/bin``."""
    return Path(sys.prefix) / "llama.cpp" / "bin"


def find_tool(name: str) -> Path | None:
    """The path of llama.cpp's tool ``name`` (e.g. "llama-quantize"), or None when it is nowhere to be found."""
    folders = [Path(os.environ[TOOLS_ENV]).expanduser()] if os.environ.get(TOOLS_ENV) else []
    folders.append(build_folder())
    for folder in folders:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def missing_reason(name: str) -> str | None:
    """One actionable line when tool ``name`` is missing, else None."""
    if find_tool(name) is not None:
        return None
    return (f"llama.cpp's {name} was not found: run `make llama-cpp` (builds it into {build_folder()}), "
            f"or set {TOOLS_ENV} to a folder holding llama.cpp's tools")


def require_tool(name: str) -> Path:
    """The tool's path, or a StudioError saying how to get it."""
    path = find_tool(name)
    if path is None:
        raise StudioError(missing_reason(name))
    return path


def run_tool(name: str, args: list[str], *, doing: str, poll_s: float = 0.2) -> Generator[Any, None, str]:
    """Run ``name args…``; yields a Log when it starts, then None while it runs (cancel points); returns its
    output (stdout and stderr together).  A non-zero exit raises StudioError with the tool's last lines."""
    tool = require_tool(name)
    return (yield from run_command([str(tool), *args], doing=doing, poll_s=poll_s, label=name))


def run_command(argv: list[str], *, doing: str, poll_s: float = 0.2, env: dict[str, str] | None = None,
                label: str | None = None) -> Generator[Any, None, str]:
    """Run the command ``argv`` as :func:`run_tool` runs a tool (cancel points; closing kills it; a non-zero exit
    is one StudioError line naming ``label`` with the command's last lines)."""
    label = label or Path(argv[0]).name
    yield Log(f"{doing}: {label} {' '.join(argv[1:])}")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", env=env) as process:
        chunks: list[str] = []
        try:
            # communicate() with a timeout keeps what was read so far; the last call returns all the output
            while True:
                try:
                    out, _ = process.communicate(timeout=poll_s)
                    chunks.append(out or "")
                    break
                except subprocess.TimeoutExpired:
                    yield None
        finally:
            if process.poll() is None:  # cancelled (the generator was closed) or an error: stop the tool
                process.kill()
                process.wait()
    output = "".join(chunks)
    if process.returncode != 0:
        tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:])
        raise StudioError(f"{doing} failed: {label} exited with {process.returncode}: {tail}")
    return output


def drain_tool(job: Generator[Any, None, Any]) -> Any:
    """Run a :func:`run_tool` generator to its end with no one listening; its return value."""
    while True:
        try:
            next(job)
        except StopIteration as done:
            return done.value


_PPL = re.compile(r"Final estimate: PPL = ([0-9.]+|nan|inf)")
_RUNNING = re.compile(r"\[(\d+)\]([0-9.]+|nan|inf),")
ATTEMPTS = 4  # llama.cpp's logger can drop its last lines at exit (ggml-org/llama.cpp#22142): run it again


def perplexity(model: str | Path, text_file: str | Path, context: int, chunks: int | None = None,
               threads: int = 2) -> dict[str, Any]:
    """llama.cpp's own perplexity of GGUF ``model`` on a plain-text file (``llama-perplexity -c context``):
    chunks of ``context`` tokens, BOS first where the model adds one, the second half of each scored.

    Read from its "Final estimate" line, or from the running value it prints after the last chunk (the same
    number); when its logger dropped both at exit, the tool runs again."""
    args = ["-m", str(model), "-f", str(text_file), "-c", str(context), "-b", str(context), "-t", str(threads),
            "--no-warmup"]
    if chunks is not None:
        args += ["--chunks", str(chunks)]
    started = time.perf_counter()
    for _attempt in range(ATTEMPTS):
        output = drain_tool(run_tool("llama-perplexity", args, doing="measuring perplexity with llama.cpp"))
        count = re.search(r"calculating perplexity over (\d+) chunks", output)
        chunk_count = int(count.group(1)) if count else None
        found = _PPL.search(output)
        running = {int(n): value for n, value in _RUNNING.findall(output)}
        value = found.group(1) if found else running.get(chunk_count) if chunk_count else None
        if value is not None:
            return {"perplexity": float(value), "chunks": chunk_count, "seconds": time.perf_counter() - started}
    raise StudioError(f"llama-perplexity printed no final estimate in {ATTEMPTS} runs: "
                      + output.strip().splitlines()[-1])
