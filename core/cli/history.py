"""``compression-studio-cli history``: the run history on the terminal (or as JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from core.eval.pareto import best_trade_offs
from core.eval.size_baseline import SAME_SIZE, original_size_of_metrics
from core.history.store import History


def _number(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "bytes":
        return f"{value / 1e6:.1f} MB"
    if kind == "fraction":
        return f"{value:.1%}"
    return f"{value:.3f}"


def history_lines(records: list[Any]) -> list[str]:
    """One line per run, newest first: id, start, status, size and quality after, recipe, output."""
    done = [r for r in records if r.status == "done"]
    # the same rule as the History page: measured, smaller than the run's own original, and not dominated
    best = {done[i].id for i in best_trade_offs(
        [(r.metric("bytes_on_disk_after"), r.metric("perplexity_after")) for r in done],
        [(original_size_of_metrics(r.metrics).compared(), r.metric("perplexity_before")) for r in done],
        same_size=SAME_SIZE)}
    lines = [f"{'run':>5}  {'started (UTC)':<19}  {'status':<11}  {'size after':>10}  {'quality after':>16}  "
             f"recipe → output"]
    for r in records:
        if r.metric("perplexity_after") is not None:
            quality = f"ppl {_number(r.metric('perplexity_after'), 'plain')}"
        elif r.metric("accuracy_after") is not None:
            quality = f"acc {_number(r.metric('accuracy_after'), 'fraction')}"
        else:
            quality = "—"
        mark = "*" if r.id in best else " "
        lines.append(f"{r.id:>4}{mark}  {r.started[:19].replace('T', ' '):<19}  {r.status:<11}  "
                     f"{_number(r.metric('bytes_on_disk_after'), 'bytes'):>10}  {quality:>16}  "
                     f"{r.recipe_name} → {r.output}")
        if r.message and r.status != "done":
            lines.append(f"{'':>7}{r.message}")
    if best:
        lines.append("* best trade-off between size on disk and perplexity: smaller than its original, and no other "
                     "run nor original is smaller and better")
    return lines


def cmd_history(args) -> int:
    """List the recorded runs (marks interrupted ones first); ``--json`` for every stored field."""
    history = History()
    if history.notice:
        print(f"warning: {history.notice}")
    records = history.runs()
    if args.json:
        print(json.dumps([asdict(r) for r in records], indent=2))
    elif not records:
        print(f"No runs recorded yet in {history.path}.")
    else:
        print("\n".join(history_lines(records)))
    return 0
