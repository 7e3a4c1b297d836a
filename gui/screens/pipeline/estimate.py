"""The pre-flight estimate's arithmetic lives in core (:mod:`core.engine.estimate`); re-exported for the page."""

from __future__ import annotations

from core.engine.estimate import Estimate, estimate

__all__ = ["Estimate", "estimate"]
