"""The generation playground: one prompt to the teacher and the student, answers side by side.

Both models are loaded once, in a background job, and kept for the next prompt; generation runs in
a job too, so the window never freezes.  Tokens where the two greedy answers part are highlighted
(the alignment is :func:`core.eval.compare.token_divergence`).
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.eval.compare import divergence_sentence
from gui.errors import show_error
from gui.worker import JobHandle, start_job

DIFFERENT_STYLE = "background-color:#f5c542;color:#000000;"
FIRST_STYLE = DIFFERENT_STYLE + "text-decoration:underline;font-weight:bold;"
QUIET_STYLE = "color:#888888;font-style:italic;"
END_OF_ANSWER = " [end of answer]"  # in place of the special token a model ends its answer with
DEFAULT_PROMPT = "The most important thing about small language models is"


def tokens_html(tokens: list[str], same: list[bool], first: int | None, special: list[bool] | None = None) -> str:
    """The answer's tokens as HTML, the ones that differ from the other side highlighted.

    Special tokens (``special[i]``: end of text, chat markers such as ``<|im_end|>``) are control signals,
    not text: they are not shown, except a final one, which reads 'end of answer'.
    """
    special = special or [False] * len(tokens)
    parts = []
    for index, (token, matches, is_special) in enumerate(zip(tokens, same, special, strict=True)):
        if is_special:
            if index != len(tokens) - 1:
                continue
            text = END_OF_ANSWER
        else:
            text = escape(token).replace("\n", "↵<br>")
        if matches:
            parts.append(f'<span style="{QUIET_STYLE}">{text}</span>' if is_special else text)
        else:
            style = FIRST_STYLE if index == first else DIFFERENT_STYLE
            parts.append(f'<span style="{style}" title="differs from the other model">{text or "∅"}</span>')
    return f'<div style="white-space:pre-wrap">{"".join(parts)}</div>'


def _pair_and_answer(key: tuple[str, str, str, str], pair: Any, prompt: str, max_new_tokens: int):
    """The job: load the pair if needed, then both answers.  Returns (key, pair, result)."""
    from core.eval.playground import iter_compare_answers, iter_load_pair

    if pair is None:
        teacher, student, task, device = key
        pair = yield from iter_load_pair(teacher, student, task, device)
    result = yield from iter_compare_answers(pair, prompt, max_new_tokens)
    return key, pair, result


class Playground(QGroupBox):
    answered = Signal(object)  # core.eval.playground.PlaygroundResult

    def __init__(self, device: Callable[[], str] | None = None, parent: QWidget | None = None):
        super().__init__("Generation playground", parent)
        self.setToolTip("Ask both models the same thing and read their answers side by side.")
        self.device = device or (lambda: "cpu")
        self.run: Any = None  # core.eval.compare.SavedRun
        self.job: JobHandle | None = None
        self._pair: Any = None
        self._pair_key: tuple[str, str, str, str] | None = None
        self.result: Any = None

        self.prompt = QLineEdit(DEFAULT_PROMPT)
        self.prompt.setToolTip("The text both models continue. Each answers greedily (always its most likely "
                               "next token), so the same prompt always gives the same answer.")
        self.prompt.returnPressed.connect(self.generate)
        self.new_tokens = QSpinBox()
        self.new_tokens.setRange(1, 256)
        self.new_tokens.setValue(32)
        self.new_tokens.setSuffix(" tokens")
        self.new_tokens.setToolTip("At most this many new tokens per answer (an answer may stop earlier at its "
                                   "end-of-text token).")
        self.generate_button = QPushButton("Generate  (Ctrl+G)")
        self.generate_button.setShortcut("Ctrl+G")
        self.generate_button.setToolTip("Send the prompt to both models in the background. The first time, both "
                                        "models are loaded, which takes a little longer.")
        self.generate_button.clicked.connect(self.generate)
        self.status = QLabel("Open a result, type a prompt and press Generate.")
        self.status.setWordWrap(True)
        self.answers: dict[str, QTextBrowser] = {}
        self.speeds: dict[str, QLabel] = {}
        grid = QGridLayout()
        for column, (side, title) in enumerate((("teacher", "Teacher (original)"), ("student", "Student (result)"))):
            label = QLabel(f"<b>{title}</b>")
            view = QTextBrowser()
            view.setToolTip(f"The {side}'s answer. Highlighted tokens differ from the other model's answer; the "
                            "first difference is underlined.")
            view.setMinimumHeight(90)
            speed = QLabel("—")
            speed.setToolTip("Measured while answering: time to the first new token (reading the prompt), then "
                             "decode speed of the tokens after it. One short answer: a rough figure.")
            grid.addWidget(label, 0, column)
            grid.addWidget(view, 1, column)
            grid.addWidget(speed, 2, column)
            self.answers[side], self.speeds[side] = view, speed
        top = QHBoxLayout()
        top.addWidget(self.prompt, 1)
        top.addWidget(self.new_tokens)
        top.addWidget(self.generate_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.status)
        layout.addLayout(grid, 1)
        self.set_run(None)

    def set_run(self, run: Any) -> None:
        """Answer with this saved run's teacher and student (None: nothing to compare yet)."""
        self.run = run
        usable = run is not None and run.task == "causal-lm"
        self.generate_button.setEnabled(usable and not self.is_busy())
        self.prompt.setEnabled(usable)
        if run is None:
            self.status.setText("Open a result, type a prompt and press Generate.")
        elif not usable:
            self.status.setText("This result is a classifier: its answers are labels, so there is nothing to "
                                "generate. Compare its accuracy in the table above.")
        else:
            self.status.setText(f"Teacher: {run.teacher_source}. Student: {run.folder}. Press Generate.")
        if self._pair_key is not None and run is not None and self._key(run) != self._pair_key:
            self._pair = self._pair_key = None  # another result: load the new pair on the next Generate
        for view in self.answers.values():
            view.clear()
        for label in self.speeds.values():
            label.setText("—")

    def _key(self, run: Any) -> tuple[str, str, str, str]:
        return run.teacher_source, str(Path(run.folder)), run.task, self.device()

    def is_busy(self) -> bool:
        return self.job is not None and self.job.is_running()

    def generate(self) -> JobHandle | None:
        """Send the prompt to both models in a background job (loading them the first time)."""
        if self.run is None or self.is_busy() or not self.generate_button.isEnabled():
            return None
        key = self._key(self.run)
        pair = self._pair if key == self._pair_key else None
        prompt, max_new = self.prompt.text(), self.new_tokens.value()
        self.status.setText("Loading both models, then answering…" if pair is None else "Answering…")
        self.generate_button.setEnabled(False)
        self.job = start_job(lambda: _pair_and_answer(key, pair, prompt, max_new), on_finished=self._on_answered,
                             on_errored=self._on_errored, on_done=self._on_done)
        return self.job

    def _on_done(self) -> None:
        self.generate_button.setEnabled(self.run is not None and self.run.task == "causal-lm")

    def _on_errored(self, exc: BaseException) -> None:
        self.status.setText(f"No answer: {exc}")
        show_error(exc, self.window(), "Generating the answers")

    def _on_answered(self, outcome: tuple) -> None:
        key, pair, result = outcome
        if self.run is None or key != self._key(self.run):
            return  # the result changed while answering
        self._pair_key, self._pair, self.result = key, pair, result
        divergence = result.divergence
        for side, answer, same in (("teacher", result.teacher, divergence.teacher_same),
                                   ("student", result.student, divergence.student_same)):
            self.answers[side].setHtml(tokens_html(answer.tokens, same, divergence.first_difference,
                                                   answer.special))
            speed = (f"{answer.decode_tokens_per_s:.1f} tokens/s decoding" if answer.decode_tokens_per_s
                     else "too short to time decoding")
            count = len(answer.tokens)
            self.speeds[side].setText(f"{count} token{'' if count == 1 else 's'}; first token after "
                                      f"{answer.first_token_ms:.0f} ms; {speed}")
        self.status.setText(divergence_sentence(divergence))
        self.answered.emit(result)
