"""Recipes: what model, which data, which ordered technique steps, and what to evaluate.

A recipe round-trips through YAML/JSON.  Loading validates everything up front, so a bad value
is reported (naming the step, the field and the allowed range) before any work starts.

Example::

    version: 1
    name: half the weights
    model: {source: "bundled:smollm2-135m"}
    data: {calibration: "bundled:wiki-calibration", evaluation: "bundled:wiki-evaluation"}
    steps:
      - technique: magnitude_prune
        params: {sparsity: 0.5}
    output: {dtype: auto}   # or float32 | bfloat16 | float16 (see core/io/save_dtype.py)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.data.conventions import CONVENTIONS
from core.data.task_rows import check_task_names
from core.engine.params import config_from_dict, config_to_dict, param, validate_config
from core.engine.registry import get_technique
from core.errors import DataError, RecipeError

RECIPE_VERSION = 1
TASKS = ("causal-lm", "sequence-classification")


@dataclass
class ModelSpec:
    source: str = param("bundled:smollm2-135m", "The model to compress: a Hugging Face hub id "
                        "(owner/name), a local folder, a .gguf file, or bundled:smollm2-135m.")
    task: str = param("causal-lm", "What the model does: generate text, or classify it.", choices=TASKS)
    trust_remote_code: bool = param(False, "Run Python code shipped with the model. Only for models "
                                    "you trust: that code runs with your permissions.")
    stream: bool = param(False, "Keep the weights on disk and bring one decoder block at a time into memory "
                         "(models bigger than memory). Wanda and GPTQ and perplexity only, on a local "
                         "safetensors folder of a Llama-shaped model; anything else says so before it starts.")


@dataclass
class DataSpec:
    calibration: str = param("bundled:wiki-calibration", "Text the data-aware techniques learn from: "
                             "a .txt/.jsonl/.csv file, a dataset folder, or a bundled sample.")
    evaluation: str = param("bundled:wiki-evaluation", "Held-out text used to measure perplexity; "
                            "never the same as the calibration text.")
    labelled: str = param("bundled:rotten-tomatoes", "Labelled examples (text + label) for classifiers.")
    text_column: str = param("text", "Column that holds the text in .jsonl/.csv files.")
    label_column: str = param("label", "Column that holds the label in labelled datasets.")
    sequence_length: int = param(512, "Tokens per window of text.", minimum=16, maximum=8192)
    calibration_windows: int = param(64, "How many windows of calibration text to use.", minimum=1,
                                     maximum=4096)


@dataclass
class EvalSpec:
    perplexity: bool = param(True, "Measure perplexity on the evaluation text before and after.")
    max_windows: int = param(40, "At most this many evaluation windows (0 = all of them).", minimum=0,
                             maximum=100000)
    perplexity_convention: str = param(
        "transformers", "How the evaluation text is cut for perplexity, so you can compare with published "
        "numbers: transformers (windows read on their own, as GPTQ, SparseGPT and Wanda report), lm-eval "
        "(every token predicted, documents on their own) or llama.cpp (only the second half of each window "
        "scored; lower numbers).", choices=CONVENTIONS)
    speed: bool = param(False, "Measure prefill latency and decode tokens/s before and after.")
    kl_to_teacher: bool = param(True, "Measure how far the result's predictions drift from the "
                                "original's (KL divergence per token).")
    tasks: list[str] = param(
        [], "Zero-shot tasks scored before and after, exactly as lm-eval scores them: arc_easy, arc_challenge, "
        "piqa, hellaswag, boolq, or a .jsonl file of your own multiple-choice questions (question, choices, "
        "answer).", label="Tasks")
    task_limit: int = param(250, "Questions per task: a random subset of this many (the same every run) gives a "
                            "quick estimate with its error bar; 0 scores every question (minutes to hours).",
                            minimum=0, maximum=100000)
    prompts: list[str] = param([], "Prompts both models answer (greedy, 48 new tokens) so you can compare "
                          "their text side by side.")


@dataclass
class OutputSpec:
    dtype: str = param("auto", "Number format of the saved weights. auto keeps the source's (a GGUF of 4- or "
                       "8-bit blocks is saved as bfloat16); bfloat16 or float16 halve a float32 file. Packed "
                       "and quantized layers always keep their own format.",
                       choices=("auto", "float32", "bfloat16", "float16"))


@dataclass
class Step:
    """One technique step: its registered name, typed config, and whether it is switched on."""

    technique: str
    config: Any
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"technique": self.technique, "enabled": self.enabled, "params": config_to_dict(self.config)}


@dataclass
class Recipe:
    name: str = "untitled"
    description: str = ""
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    steps: list[Step] = field(default_factory=list)
    output: OutputSpec = field(default_factory=OutputSpec)
    seed: int = 0

    def enabled_steps(self) -> list[tuple[int, Step]]:
        return [(i, s) for i, s in enumerate(self.steps) if s.enabled]

    def validate(self) -> None:
        """Re-check every part (the GUI edits configs in place)."""
        validate_config(self.model, "model: ")
        validate_config(self.data, "data: ")
        validate_config(self.evaluation, "evaluation: ")
        _check_tasks(self.evaluation)
        validate_config(self.output, "output: ")
        for index, step in enumerate(self.steps):
            validate_config(step.config, f"step {index + 1} ({step.technique}): ")

    def to_dict(self) -> dict[str, Any]:
        return {"version": RECIPE_VERSION, "name": self.name, "description": self.description, "seed": self.seed,
                "model": config_to_dict(self.model), "data": config_to_dict(self.data),
                "evaluation": config_to_dict(self.evaluation), "output": config_to_dict(self.output),
                "steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, raw: Any) -> Recipe:
        if not isinstance(raw, dict):
            raise RecipeError("a recipe must be a mapping with keys like model, data and steps")
        raw = dict(raw)
        version = raw.pop("version", RECIPE_VERSION)
        if version != RECIPE_VERSION:
            raise RecipeError(f"recipe version {version} is not supported; this app reads version {RECIPE_VERSION}")
        known = {"name", "description", "seed", "model", "data", "evaluation", "output", "steps"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RecipeError(f"unknown recipe key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        steps_raw = raw.get("steps") or []
        if not isinstance(steps_raw, list):
            raise RecipeError("steps must be a list of {technique: ..., params: {...}}")
        steps = [_step_from_dict(i, s) for i, s in enumerate(steps_raw)]
        for key in ("name", "description"):
            if isinstance(raw.get(key), list | dict):
                raise RecipeError(f"{key} must be a line of text, got {raw[key]!r}")
        seed = raw.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RecipeError(f"seed must be a whole number, got {seed!r}")
        evaluation = config_from_dict(EvalSpec, raw.get("evaluation"), "evaluation: ")
        _check_tasks(evaluation)
        return cls(name=str(raw.get("name", "untitled")), description=str(raw.get("description") or ""), seed=seed,
                   model=config_from_dict(ModelSpec, raw.get("model"), "model: "),
                   data=config_from_dict(DataSpec, raw.get("data"), "data: "),
                   evaluation=evaluation,
                   output=config_from_dict(OutputSpec, raw.get("output"), "output: "), steps=steps)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else self.to_yaml()
        path.write_text(text, encoding="utf-8")


def _check_tasks(evaluation: EvalSpec) -> None:
    """RecipeError naming unknown task names (a bundled name or a .jsonl file is expected)."""
    try:
        check_task_names(evaluation.tasks)
    except DataError as exc:
        raise RecipeError(f"evaluation: tasks: {exc}") from None


def _step_from_dict(index: int, raw: Any) -> Step:
    where = f"step {index + 1}"
    if not isinstance(raw, dict) or "technique" not in raw:
        raise RecipeError(f"{where}: each step needs a 'technique' name and optional 'params'")
    unknown = sorted(set(raw) - {"technique", "params", "enabled"})
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; use technique, params, enabled")
    info = get_technique(str(raw["technique"]))
    config = config_from_dict(info.config_cls, raw.get("params"), f"{where} ({info.name}): ")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RecipeError(f"{where}: enabled must be true or false, got {enabled!r}")
    return Step(info.name, config, enabled)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (.yaml, .yml or .json)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except UnicodeDecodeError:
        raise RecipeError(f"{path} is not a text file; a recipe is YAML or JSON") from None
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise RecipeError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {first}") from None
    return Recipe.from_dict(raw)


def recipe_from_text(text: str) -> Recipe:
    raw = yaml.safe_load(text)
    return Recipe.from_dict(raw)


# Tokens the before/after classification accuracy reads of each text when no step says (see classifier_reading).
DEFAULT_CLASSIFIER_MAX_LENGTH = 256


def classifier_reading(recipe: Recipe) -> tuple[int, str]:
    """(max_length, keep) the before/after accuracy reads texts with: those of the last enabled step that sets
    them (a classifier step), so the report's accuracy is of the texts as the steps trained and scored them."""
    reading = (DEFAULT_CLASSIFIER_MAX_LENGTH, "head")
    for _, step in recipe.enabled_steps():
        max_length = getattr(step.config, "max_length", None)
        if isinstance(max_length, int) and max_length > 0:
            reading = (max_length, str(getattr(step.config, "keep", "head")))
    return reading
