"""Where an output may be written, and what it may replace: nothing a person owns is ever lost.

The rules, checked before any work and again just before the rename that replaces anything:

* an output never is, contains, or lies inside an input of the work (the model source, the data
  files, the recipe, the folder being exported), compared after resolving symlinks;
* the home folder, a filesystem root or mount point, and the app's own data, cache and dataset
  folders (and the Hugging Face cache) are never an output, nor a folder that holds one of them;
* an existing folder is replaced only when the person asked to overwrite it *and* it is an earlier
  result of this app (it holds the ``report.json`` with before/after measurements and the
  ``recipe.yaml`` every run writes); an existing file only when asked and when this app wrote it
  (a GGUF export carries :data:`GGUF_MARK_KEY`).

Every refusal is an :class:`OutputError` whose one line names the place and what to do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from core import paths
from core.errors import StudioError

GGUF_MARK_KEY = "compression_studio.export"  # a metadata key every GGUF this app writes carries


class OutputError(StudioError):
    """The output cannot be written where the person asked."""


def resolved(path: str | Path) -> Path:
    """``path`` with ``~`` expanded and every symlink resolved (the parts that exist)."""
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def is_app_result(folder: Path) -> bool:
    """Whether ``folder`` is a run's output written by this app (report.json with measurements + recipe.yaml)."""
    report, recipe = folder / "report.json", folder / "recipe.yaml"
    if not (report.is_file() and recipe.is_file()) or folder.is_symlink():
        return False
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "before" in data and "after" in data


def is_app_gguf(path: Path) -> bool:
    """Whether ``path`` is a GGUF file this app exported (it carries our metadata key)."""
    try:
        import gguf

        return gguf.GGUFReader(str(path)).get_field(GGUF_MARK_KEY) is not None
    except Exception:  # not a GGUF at all, or a damaged one: not ours to replace
        return False


def _protected() -> list[tuple[Path, str]]:
    """Folders that are never an output nor inside one, each with a name a person recognises."""
    places = [(Path.home(), "your home folder"), (paths.data_dir(), "this app's data folder"),
              (paths.cache_dir(), "this app's cache folder"), (paths.datasets_dir(), "this app's sample data")]
    home = os.environ.get(paths.HOME_ENV)
    if home:
        places.append((Path(home), "this app's home folder"))
    try:
        from huggingface_hub import constants

        places.append((Path(constants.HF_HUB_CACHE), "the Hugging Face download cache"))
    except Exception:  # huggingface_hub comes with transformers; without it there is no such cache
        pass
    return [(resolved(p), label) for p, label in places]


# Outputs may not go *inside* these either: the cache is deleted at will and the others are inputs.
_NOT_INSIDE = ("this app's cache folder", "this app's sample data", "the Hugging Face download cache")


def check_not_protected(output: Path) -> None:
    """Refuse a home folder, a filesystem root or mount point, or the app's own folders as an output."""
    if output == Path(output.anchor) or os.path.ismount(output):
        raise OutputError(f"{output} is the root of a filesystem and can never be an output: "
                          "choose a new folder for the result")
    for place, label in _protected():
        if _inside(place, output):
            what = label if place == output else f"it holds {label} ({place})"
            raise OutputError(f"{output} cannot be an output: {what}. Choose a new folder for the result")
        if label in _NOT_INSIDE and _inside(output, place):
            raise OutputError(f"{output} lies inside {label} ({place}), which is not a place for results: "
                              "choose a folder of your own")


class Input(NamedTuple):
    """Something the work reads, and how to name it to a person ("the source model")."""

    path: Path
    label: str = "an input of this work"


def _as_inputs(inputs: Iterable[Input | str | Path | None]) -> list[Input]:
    found = []
    for item in inputs:
        if isinstance(item, Input):
            found.append(item)
        elif item is not None and str(item) != "":
            found.append(Input(Path(item)))
    return found


def check_apart_from_inputs(output: Path, inputs: Iterable[Input | str | Path | None]) -> None:
    """Refuse an output that is, contains or lies inside any input of the work."""
    for item in _as_inputs(inputs):
        source, label = resolved(item.path), item.label
        if output == source:
            raise OutputError(f"the output {output} is {label}: choose a new folder so the original stays "
                              "untouched")
        if source.is_dir() and _inside(output, source):
            raise OutputError(f"the output {output} would be inside {label} ({source}): choose a folder outside "
                              "it so the original stays untouched")
        if _inside(source, output):
            raise OutputError(f"the output {output} holds {label} ({source}), which writing there would "
                              "destroy: choose a new folder for the result")


def check_output_place(output_dir: str | Path, inputs: Iterable[Input | str | Path | None] = ()) -> Path:
    """The checks that do not depend on what exists there yet: not a protected folder, apart from the inputs."""
    output = resolved(output_dir)
    check_not_protected(output)
    check_apart_from_inputs(output, inputs)
    return output


def check_output_dir(output_dir: str | Path, inputs: Iterable[Input | str | Path | None] = (),
                     overwrite: bool = False) -> Path:
    """Validate a destination folder before any work; return it resolved.

    ``inputs``: what the work reads (model source, data files, recipe file).  An existing folder that
    is not empty is accepted only with ``overwrite`` and only when it is an earlier result of this app.
    """
    output = check_output_place(output_dir, inputs)
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output} is a file; choose a folder name for the output")
    if output.is_dir() and any(output.iterdir()):
        check_replaceable_folder(output, overwrite)
    if not output.parent.is_dir():
        raise OutputError(f"the folder {output.parent} does not exist; create it or choose another place")
    if not os.access(output.parent, os.W_OK):
        raise OutputError(f"cannot write in {output.parent}: choose a folder you own")
    return output


def check_replaceable_folder(output: Path, overwrite: bool) -> None:
    """An existing, non-empty ``output`` may be replaced only if asked and if it is one of our results."""
    if not overwrite:
        raise OutputError(f"{output} already exists and is not empty: choose a new folder, or allow "
                          "overwriting an earlier result of this app")
    if not is_app_result(output):
        raise OutputError(f"{output} holds files this app did not write (it is not the output folder of an "
                          "earlier run: no report.json and recipe.yaml), so it is never replaced: choose a "
                          "new folder for the result")


def check_output_file(path: str | Path, suffix: str, inputs: Iterable[Input | str | Path | None] = (),
                      overwrite: bool = False) -> Path:
    """Validate a destination file (a GGUF export) before any work; return it resolved.

    The name must end in ``suffix`` (it is never changed silently); an existing file is replaced only
    with ``overwrite`` and only when this app wrote it.
    """
    target = resolved(path)
    if target.suffix.lower() != suffix:
        raise OutputError(f"{target.name}: the file name must end in {suffix}; add it and try again")
    check_apart_from_inputs(target, inputs)
    for place, label in _protected():
        if label in _NOT_INSIDE and _inside(target, place):
            raise OutputError(f"{target} lies inside {label} ({place}), which is not a place for results: "
                              "choose a folder of your own")
    if target.is_dir():
        raise OutputError(f"{target} is a folder; choose a file name ending in {suffix}")
    if target.exists():
        if not overwrite:
            raise OutputError(f"{target} already exists: choose another name, or allow replacing it")
        if suffix == ".gguf" and not is_app_gguf(target):
            raise OutputError(f"{target} is not a GGUF file this app exported, so it is never replaced: "
                              "choose another name")
    if not target.parent.is_dir():
        raise OutputError(f"the folder {target.parent} does not exist; create it or choose another place")
    if not os.access(target.parent, os.W_OK):
        raise OutputError(f"cannot write in {target.parent}: choose a folder you own")
    return target
