"""The numbers worth keeping from a run's report, as one flat dict (the history's ``metrics`` column)."""

from __future__ import annotations

from typing import Any

from core.eval.compare import mean_task_accuracy
from core.eval.verdict import INPUTS_KEY, quality_inputs


def summarize_report(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers worth keeping from a runner report: sizes, parameters, quality (perplexity, accuracy, the
    average zero-shot task accuracy), KL, time; for the original also its size as a 16-bit model and, for a
    GGUF source, how the file stores its weights (what a result's size is compared with)."""
    summary: dict[str, Any] = {}
    for label in ("before", "after"):
        part = report.get(label) or {}
        for key in ("bytes_on_disk", "bytes_in_memory", "parameters", "nonzero_parameters"):
            if isinstance(part.get(key), int | float):
                summary[f"{key}_{label}"] = part[key]
        if label == "before":  # what the original's size is compared with (core.eval.size_baseline)
            for key in ("bytes_as_16bit", "stored_bits", "stored_format"):
                if isinstance(part.get(key), int | float | str) and part[key] != "":
                    summary[f"{key}_before"] = part[key]
        ppl = (part.get("perplexity") or {}).get("perplexity")
        if isinstance(ppl, int | float):
            summary[f"perplexity_{label}"] = ppl
        scores = part.get("classification") or {}
        for key in ("accuracy", "macro_f1"):
            if isinstance(scores.get(key), int | float):
                summary[f"{key}_{label}"] = scores[key]
        tasks = mean_task_accuracy(part)
        if tasks is not None:  # the average headline accuracy of the zero-shot tasks scored
            summary[f"task_accuracy_{label}"] = tasks
        speed = (part.get("speed") or {}).get("decode_tokens_per_s")
        if isinstance(speed, int | float):
            summary[f"decode_tokens_per_s_{label}"] = speed
    comparison = report.get("comparison") or {}
    for key in ("kl_per_token", "top1_agreement"):
        if isinstance(comparison.get(key), int | float):
            summary["kl_to_teacher" if key == "kl_per_token" else key] = comparison[key]
    if isinstance(report.get("seconds"), int | float):
        summary["seconds"] = report["seconds"]
    summary["steps"] = [step.get("technique", "?") for step in report.get("steps") or []]
    scored = (report.get("after") or {}).get("tasks")
    if isinstance(scored, dict) and scored:
        summary["tasks"] = list(scored)  # which tasks the average covers (averages of other tasks differ)
    inputs = quality_inputs(report)  # what the quality verdict is judged from, when shown
    if any(value not in (None, []) for value in inputs.values()):
        summary[INPUTS_KEY] = inputs
    return summary
