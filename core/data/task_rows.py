"""Zero-shot multiple-choice tasks: which ones, where their rows lie, and the prompts lm-eval builds.

A task row becomes a :class:`ChoiceQuestion`: a context, the answer choices and the index of the
right one.  The prompts are lm-evaluation-harness 0.4.x's, template for template (its task YAMLs
``super_glue/boolq``, ``piqa``, ``hellaswag`` (with its ``utils.preprocess``) and ``arc``), so that a
score here is the score lm-eval reports for the same model:

* BoolQ: ``"{passage}\\nQuestion: {question}?\\nAnswer:"``, choices ``no``/``yes``;
* PIQA: ``"Question: {goal}\\nAnswer:"``, choices ``sol1``/``sol2``;
* HellaSwag: ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``, the four
  preprocessed endings;
* ARC-Easy / ARC-Challenge: ``"Question: {question}\\nAnswer:"``, the choice texts.

The scorer (:mod:`core.eval.task_accuracy`) appends each choice to the context after one space
(lm-eval's ``target_delimiter``).  A person's own multiple-choice JSONL (``question``, ``choices``,
``answer``) gets the ARC prompt.  The rows themselves are installed by :mod:`core.data.task_setup`.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.paths import datasets_dir

TASKS_FOLDER = "tasks"
TASK_SETUP_HINT = "run `make data` or `compression-studio-cli setup-data`"


@dataclass(frozen=True)
class TaskInfo:
    """One bundled task as a person sees it, and how it is scored."""

    name: str
    title: str
    what: str  # one sentence a non-programmer understands
    rows: int  # rows in the full set (what lm-eval scores)
    split: str
    headline: str  # "acc" or "acc_norm": the figure papers and lm-eval leaderboards quote
    chance: float  # accuracy of guessing
    licence: str
    attribution: str

    @property
    def file_name(self) -> str:
        return f"{self.name}.jsonl"


TASKS: dict[str, TaskInfo] = {
    "arc_easy": TaskInfo(
        "arc_easy", "ARC-Easy", "Grade-school science questions with 3 to 5 answers (the easier set).",
        2376, "test", "acc_norm", 0.25, "CC BY-SA 4.0",
        "AI2 Reasoning Challenge, Clark et al. 2018 (Allen Institute for AI), https://allenai.org/data/arc"),
    "arc_challenge": TaskInfo(
        "arc_challenge", "ARC-Challenge", "Harder grade-school science questions that simple methods get wrong.",
        1172, "test", "acc_norm", 0.25, "CC BY-SA 4.0",
        "AI2 Reasoning Challenge, Clark et al. 2018 (Allen Institute for AI), https://allenai.org/data/arc"),
    "piqa": TaskInfo(
        "piqa", "PIQA", "Everyday physical know-how: which of two ways reaches a goal.",
        1838, "validation", "acc_norm", 0.5, "AFL-3.0 (upstream)",
        "Physical Interaction QA, Bisk et al. 2020, https://yonatanbisk.com/piqa/"),
    "hellaswag": TaskInfo(
        "hellaswag", "HellaSwag", "Pick the sensible ending of a short everyday scene (4 endings).",
        10042, "validation", "acc_norm", 0.25, "MIT",
        "HellaSwag, Zellers et al. 2019, https://rowanzellers.com/hellaswag/"),
    "boolq": TaskInfo(
        "boolq", "BoolQ", "Yes/no questions about a paragraph of Wikipedia.",
        3270, "validation", "acc", 0.5, "CC BY-SA 3.0",
        "BoolQ, Clark et al. 2019 (Google), https://github.com/google-research-datasets/boolean-questions"),
}


@dataclass(frozen=True)
class ChoiceQuestion:
    """One multiple-choice row ready to score: ``context`` + " " + each choice; ``gold`` is the right index."""

    id: str
    context: str
    choices: tuple[str, ...]
    gold: int


# ----------------------------------------------------------------------------- lm-eval's prompts

def _hellaswag_preprocess(text: str) -> str:
    """lm-eval's ``hellaswag/utils.preprocess``: strip WikiHow's bracket artefacts."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _boolq(row: dict[str, Any]) -> tuple[str, list[str], int]:
    return f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:", ["no", "yes"], int(row["label"])


def _piqa(row: dict[str, Any]) -> tuple[str, list[str], int]:
    return f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]], int(row["label"])


def _hellaswag(row: dict[str, Any]) -> tuple[str, list[str], int]:
    context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    query = _hellaswag_preprocess(row["activity_label"] + ": " + context)
    return query, [_hellaswag_preprocess(ending) for ending in row["endings"]], int(row["label"])


def _arc(row: dict[str, Any]) -> tuple[str, list[str], int]:
    choices = row["choices"]
    return f"Question: {row['question']}\nAnswer:", list(choices["text"]), list(choices["label"]).index(row["answerKey"])


_PROMPTS = {"boolq": _boolq, "piqa": _piqa, "hellaswag": _hellaswag, "arc_easy": _arc, "arc_challenge": _arc}


def question_from_row(task: str, row: dict[str, Any], index: int) -> ChoiceQuestion:
    """The scored question of one stored row of a bundled task, built as lm-eval builds it."""
    context, choices, gold = _PROMPTS[task](row)
    return ChoiceQuestion(str(row.get("id", index)), context, tuple(choices), gold)


# ----------------------------------------------------------------------------- loading

def task_file(name: str) -> Path:
    """Where a bundled task's rows are installed (the file may not exist yet)."""
    return datasets_dir() / TASKS_FOLDER / TASKS[name].file_name


def tasks_ready() -> bool:
    """True when every bundled task's rows are installed."""
    return all(task_file(name).is_file() for name in TASKS)


def check_task_names(names: list[str]) -> None:
    """DataError naming the unknown entries of ``names`` (bundled task names or .jsonl files)."""
    unknown = [n for n in names if n not in TASKS and not n.endswith(".jsonl")]
    if unknown:
        raise DataError(f"Unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)} "
                        "or give a .jsonl file of your own (question, choices, answer).")


def load_task(name: str) -> list[ChoiceQuestion]:
    """Every question of a bundled task (by name) or of a person's own multiple-choice ``.jsonl`` file."""
    if name in TASKS:
        path = task_file(name)
        if not path.is_file():
            raise DataError(f"The task rows of {TASKS[name].title} are not installed ({path} is missing); "
                            f"{TASK_SETUP_HINT}.")
        return [question_from_row(name, row, i) for i, row in enumerate(_read_jsonl(path))]
    if name.endswith(".jsonl"):
        return load_choice_file(name)
    check_task_names([name])
    raise AssertionError("unreachable")


def load_choice_file(path: str | Path) -> list[ChoiceQuestion]:
    """A person's multiple-choice JSONL: one object per line with ``question``, ``choices`` (a list of
    texts) and ``answer`` (the right choice's index, its text, or its letter A, B, ...)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"The task file {path} does not exist; give a .jsonl file with question, choices, answer.")
    questions = []
    for number, row in enumerate(_read_jsonl(path), start=1):
        where = f"{path.name}, line {number}"
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise DataError(f"{where}: each line needs a 'question' text, 'choices' and 'answer'.")
        choices = row.get("choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise DataError(f"{where}: 'choices' must be a list of at least two non-empty texts.")
        gold = _answer_index(row.get("answer"), choices)
        if gold is None:
            raise DataError(f"{where}: 'answer' must be the right choice's index (0-based), its text or its "
                            f"letter (A-{chr(64 + len(choices))}); got {row.get('answer')!r}.")
        questions.append(ChoiceQuestion(str(row.get("id", number)), f"Question: {row['question']}\nAnswer:",
                                        tuple(choices), gold))
    if not questions:
        raise DataError(f"The task file {path} holds no questions.")
    return questions


def _answer_index(answer: Any, choices: list[str]) -> int | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return answer if 0 <= answer < len(choices) else None
    if isinstance(answer, str):
        if answer in choices:
            return choices.index(answer)
        letter = answer.strip().upper()
        if len(letter) == 1 and "A" <= letter < chr(65 + len(choices)):
            return ord(letter) - 65
    return None


def _read_jsonl(path: Path) -> list[Any]:
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path.name}, line {number} is not JSON ({exc.msg}).") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    return rows


def pick_questions(questions: list[ChoiceQuestion], limit: int | None, seed: int = 0) -> list[ChoiceQuestion]:
    """All questions, or a seeded random ``limit`` of them in their original order (the quick mode)."""
    if not limit or limit >= len(questions):
        return list(questions)
    chosen = sorted(random.Random(seed).sample(range(len(questions)), limit))
    return [questions[i] for i in chosen]


def task_title(name: str) -> str:
    """A task's title for tables: the bundled title, or the own file's name."""
    return TASKS[name].title if name in TASKS else Path(name).name
