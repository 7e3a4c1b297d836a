"""Asking before a long run is stopped: Esc, the Cancel button and the Run menu lose real work.

A run that has gone on for more than :data:`ASK_AFTER_S` asks first (a Yes/No box that says how
much work would be lost, and whether a training checkpoint lets it resume); a shorter one stops at
once, so a run started by mistake is stopped with one key.
"""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

from gui.widgets.formatting import format_duration

ASK_AFTER_S = 60.0


def stop_question(elapsed_s: float, checkpoint: bool, trains: bool) -> str:
    """The question's text: how much work is lost, and what a training checkpoint saves of it."""
    text = (f"Stop this run? {format_duration(elapsed_s)} of work will be lost: nothing is written, and a new "
            "run starts from the beginning.")
    if checkpoint:
        text += ("\n\nThe training has reached a checkpoint, which is kept: Resume training continues from it, "
                 "so only the training since that checkpoint is lost.")
    elif trains:
        text += "\n\nThe training has not reached a checkpoint yet, so it would start over too."
    return text


def confirm_stop(parent: QWidget | None, elapsed_s: float, checkpoint: bool = False, trains: bool = False) -> bool:
    """Ask whether to stop the run; True for "Stop the run".  "Keep running" is the default (and Esc)."""
    yes, no = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
    box = QMessageBox(QMessageBox.Icon.Question, "Stop this run?", stop_question(elapsed_s, checkpoint, trains),
                      yes | no, parent)
    box.button(yes).setText("Stop the run")
    box.button(no).setText("Keep running")
    box.setDefaultButton(no)
    box.setEscapeButton(no)
    return int(box.exec()) == int(yes)
