"""Replacing a submodule in place, giving the replaced weights' memory back (see :mod:`core.models.memory`)."""

from __future__ import annotations

from torch import nn

from core.models.memory import release_file_pages


def replace_module(model: nn.Module, name: str, new: nn.Module) -> int:
    """Put ``new`` at the dotted path ``name`` in ``model``; return the bytes of old weight pages dropped.

    A technique that replaces a Linear (low-rank factors, packed codes) no longer needs the old
    weight: where it was a page-aligned part of a memory-mapped weight file, its resident pages go.
    """
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return release_file_pages(list(old.parameters()) + list(old.buffers()), model)
