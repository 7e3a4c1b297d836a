"""lm-evaluation-harness itself, run offline on our installed task rows: the reference the task tests compare with.

Each task is lm-eval's own YAML (its prompt templates, HellaSwag's ``process_docs``), with only the dataset
swapped for a local JSON file of the rows we installed; the model object is handed to ``HFLM`` in memory.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

from core.data.task_rows import TASKS, task_file

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# datasets caches each JSON file it reads as Arrow; keep that out of the person's home folder
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="lm-eval-datasets-"))

YAMLS = {"boolq": "super_glue/boolq/default.yaml", "piqa": "piqa/piqa.yaml", "hellaswag": "hellaswag/hellaswag.yaml",
         "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml"}


def task_config(name: str, rows_file: Path) -> dict[str, Any]:
    """lm-eval's task config for ``name`` reading ``rows_file`` (JSONL in the dataset's own fields)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    root = Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0]) / "tasks"
    config = load_yaml(root / YAMLS[name])
    split = TASKS[name].split
    config.pop("tag", None)
    config.update(task=f"local_{name}", dataset_path="json", dataset_name=None,
                  dataset_kwargs={"data_files": {split: str(rows_file)}}, training_split=None,
                  validation_split=split if split == "validation" else None,
                  test_split=split if split == "test" else None)
    return config


def first_rows_file(name: str, count: int, folder: Path) -> Path:
    """A JSONL of the first ``count`` installed rows of a task."""
    lines = task_file(name).read_text(encoding="utf-8").splitlines()[:count]
    path = folder / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def lm_eval_scores(model, tokenizer, names: list[str], count: int, folder: Path, **hflm: Any) -> dict[str, Any]:
    """``simple_evaluate`` on the first ``count`` rows of each task: {name: (aggregates, samples by doc id)}."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    configs = [task_config(name, first_rows_file(name, count, folder)) for name in names]
    lm = HFLM(pretrained=model, tokenizer=tokenizer, **{"batch_size": 8, **hflm})
    # bootstrap_iters > 0 only so that lm-eval reports stderrs; a mean's stderr is not bootstrapped.
    out = simple_evaluate(model=lm, tasks=configs, log_samples=True, num_fewshot=0, bootstrap_iters=10)
    return {name: (out["results"][f"local_{name}"],
                   sorted(out["samples"][f"local_{name}"], key=lambda s: s["doc_id"])) for name in names}


def lm_eval_task(name: str, rows_file: Path):
    """lm-eval's ConfigurableTask for ``name`` over ``rows_file`` (its prompts, choices and targets per row)."""
    from lm_eval.api.task import ConfigurableTask

    return ConfigurableTask(config=task_config(name, rows_file))
