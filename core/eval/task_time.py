"""How long scoring zero-shot tasks takes, roughly, before it starts (torch-free: the app's window uses it).

The estimate is the tokens read (measured per task, see ``TOKENS_PER_QUESTION``) times two FLOPs per
parameter, at a throughput measured on this kind of device.  It is a guide for choosing how many
questions to score, not a measurement; the run reports the real time.
"""

from __future__ import annotations

import os

from core.data.task_rows import TASKS

# Tokens read per question once packed, measured with SmolLM2's tokenizer on 300 random questions
# of each task (other tokenizers differ by tens of percent; the estimate is a rough guide).
TOKENS_PER_QUESTION = {"arc_easy": 40, "arc_challenge": 52, "piqa": 55, "hellaswag": 161, "boolq": 144}
OWN_FILE_TOKENS_PER_QUESTION = 60
# Sustained forward-pass throughput, FLOP/s: measured ~9e10 on 2 CPU cores (bench/bench_tasks.py);
# a GPU is taken as 200x that, a deliberately cautious guess for small models.
CPU_FLOPS_PER_THREAD = 4.5e10
GPU_FLOPS = 2e13


def estimate_task_seconds(tasks: list[str], limit: int | None, parameters: int, device: str = "cpu",
                          threads: int | None = None) -> float:
    """Rough seconds to score ``tasks`` once (one model) at ``limit`` questions each: tokens read
    times two FLOPs per parameter, at the throughput measured on this kind of device."""
    if device == "cpu":
        flops = CPU_FLOPS_PER_THREAD * (threads or _cpu_threads())
    else:
        flops = GPU_FLOPS
    tokens = sum(task_tokens(task, limit) for task in tasks)
    return tokens * 2 * parameters / flops


def task_tokens(task: str, limit: int | None) -> float:
    """About how many tokens scoring ``task`` (a bundled name or a person's .jsonl) reads at ``limit``
    questions (None: all), once its choices are packed."""
    if task in TASKS:
        count, per_question = TASKS[task].rows, TOKENS_PER_QUESTION[task]
    else:
        try:
            with open(task, encoding="utf-8") as handle:
                count = sum(1 for line in handle if line.strip())
        except OSError:
            count = 0
        per_question = OWN_FILE_TOKENS_PER_QUESTION
    return float(min(count, limit or count) * per_question)


def _cpu_threads() -> int:
    """The CPUs this process may run on (what torch uses by default, near enough)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
