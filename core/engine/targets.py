"""Choosing which layers a technique touches, by name patterns, never by architecture class.

Patterns are shell-style globs matched against full module names (``model.layers.*.mlp.*``)
or a ``re:`` prefix for a regular expression.  ``ignore`` wins over ``targets``.
"""

from __future__ import annotations

import fnmatch
import re

from torch import nn

from core.errors import RecipeError

DEFAULT_TARGETS = ["*"]
DEFAULT_IGNORE = ["lm_head", "*classifier*", "score", "*pooler*"]


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name.rsplit(".", 1)[-1], pattern)


def check_targets(targets: list, ignore: list) -> None:
    """Raise RecipeError unless targets/ignore are lists of non-empty pattern strings."""
    if not targets:
        raise RecipeError("targets is empty: give at least one layer name pattern, e.g. '*'")
    for name, patterns in (("targets", targets), ("ignore", ignore)):
        if not all(isinstance(p, str) and p.strip() for p in patterns):
            raise RecipeError(f"{name} must be a list of non-empty layer name patterns, got {patterns!r}")


def select_linears(model: nn.Module, targets: list[str] | None = None,
                   ignore: list[str] | None = None) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules whose names match ``targets`` and no ``ignore`` pattern, in order."""
    targets = targets or DEFAULT_TARGETS
    ignore = DEFAULT_IGNORE if ignore is None else ignore
    chosen = [(name, module) for name, module in model.named_modules()
              if isinstance(module, nn.Linear)
              and any(_matches(name, p) for p in targets) and not any(_matches(name, p) for p in ignore)]
    if not chosen:
        raise RecipeError(f"no Linear layer matches targets {targets} (ignoring {ignore}); "
                          "check the patterns against the layer names shown by `inspect`")
    return chosen
