"""What every distillation step sets up before training: the teacher/student pair and the checkpoint store."""

from __future__ import annotations

import copy
import hashlib
import tempfile
from pathlib import Path

from core.errors import RecipeError
from core.events import Log
from core.techniques.distill.checkpoints import CheckpointStore
from core.techniques.distill.data_parallel import store_suffix
from core.techniques.distill.students import StudentOptions, load_named_student, shrink_student


def checkpoint_store(ctx, name: str) -> CheckpointStore:
    """The step's checkpoint folder: the runner's (kept across a cancel) or, outside a run, a temporary one."""
    root = getattr(ctx, "checkpoint_root", None)
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="distill-"))
    # each process of a data-parallel run keeps its own (nodes need not share a disk)
    return CheckpointStore(Path(root) / f"step-{ctx.step_index}-{name}{store_suffix()}")


def prepare_pair(model, options: StudentOptions, ctx, task: str, texts: list[str] | None = None):
    """Generator returning (student, teacher, notes); the student is ``model`` itself unless it was replaced."""
    notes: list[str] = []
    if options.student == "current":
        teacher = getattr(ctx, "teacher", None)
        if teacher is None:
            raise RecipeError("student = current needs the run's original model as teacher, and none was kept")
        notes.append("The student is the model as it arrived at this step; the teacher is the run's original.")
        student = model
    elif options.student == "shrink":
        teacher = copy.deepcopy(model)
        notes += yield from shrink_student(model, options, ctx, task, texts)
        student = model
        notes.append("The teacher is the model as it arrived at this step; the student started from its weights.")
    else:
        teacher = model
        student = yield from load_named_student(options.student_model, task, model, ctx.tokenizer, ctx.device)
        replace = getattr(ctx, "replace_model", None)
        if replace is None:
            raise RecipeError("student = model needs the runner, which replaces the run's model with the student")
        replace(student)
        notes.append(f"The student is {options.student_model}; the teacher is the model arriving at this step.")
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    for note in notes:
        yield Log(note)
    return student, teacher, notes


def run_key(*parts: str) -> str:
    """A short stable name for a run (its recipe and output folder), for its checkpoint folder."""
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]
