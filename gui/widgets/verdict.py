"""How every screen shows a quality verdict (:mod:`core.eval.verdict`): the word in its colour, the reason,
and the thresholds in the tooltip."""

from __future__ import annotations

from html import escape

from core.eval.verdict import BETTER, BROKEN, NOT_MEASURED, UNCHANGED, WORSE, Verdict

LEVEL_COLOURS = {BETTER: "#2ca02c", UNCHANGED: "#2ca02c", WORSE: "#e67e22", BROKEN: "#d62728",
                 NOT_MEASURED: "#8c8c8c"}


def level_colour(verdict: Verdict) -> str:
    return LEVEL_COLOURS.get(verdict.level, "#8c8c8c")


def verdict_html(verdict: Verdict, prefix: str = "Quality") -> str:
    """'<b>Quality: nearly unchanged</b> — reason' as rich text, the word in its colour."""
    return (f"<b>{escape(prefix)}: <span style='color:{level_colour(verdict)}'>{escape(verdict.level)}</span></b>"
            f" — {escape(verdict.reason, quote=False)}")
