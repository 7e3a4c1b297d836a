"""A few real, small runs recorded in the history, for the History screenshot and demos.

Each one compresses the bundled model (or ``source``) with one quick technique, measures it on a
few windows of the bundled evaluation text and saves it, through ``core.history.store.recorded_run``
exactly as the Run page does.  One run is cancelled part-way, so the table shows that status too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SAMPLES = (
    ("8-bit RTN", "rtn_quantize", {"bits": 8}),
    ("4-bit RTN", "rtn_quantize", {"bits": 4}),
    ("3-bit RTN, MSE clip", "rtn_quantize", {"bits": 3, "clip": "mse"}),
    ("Magnitude 50%, sparse file", "magnitude_prune", {"sparsity": 0.5, "save_format": "sparse"}),
    ("MLP neurons -25%", "mlp_prune", {"reduction": 0.25}),
)
CANCELLED = ("Wanda 50% (cancelled)", "wanda_prune", {"sparsity": 0.5})


def _recipe(name: str, technique: str, params: dict, source: str):
    from core.engine.params import config_from_dict
    from core.engine.recipe import DataSpec, EvalSpec, ModelSpec, Recipe, Step
    from core.engine.registry import get_technique

    config = config_from_dict(get_technique(technique).config_cls, params)
    return Recipe(name=name, model=ModelSpec(source=source),
                  data=DataSpec(sequence_length=128, calibration_windows=4),
                  evaluation=EvalSpec(max_windows=2), steps=[Step(technique, config)])


def record_sample_runs(root: Path, source: str = "bundled:smollm2-135m",
                       say: Callable[[str], None] = print) -> list[Path]:
    """Run the samples into new folders under ``root``; return the folders written."""
    from core.events import LayerStat, drain
    from core.history.store import recorded_run

    root.mkdir(parents=True, exist_ok=True)
    written = []
    for number, (name, technique, params) in enumerate(SAMPLES, start=1):
        output = root / f"{number:02d}-{technique}"
        say(f"history sample {number}/{len(SAMPLES)}: {name}")
        drain(recorded_run(_recipe(name, technique, params, source), output, overwrite=True, origin="app"))
        written.append(output)
    name, technique, params = CANCELLED
    job = recorded_run(_recipe(name, technique, params, source), root / "cancelled", overwrite=True, origin="app")
    for event in job:
        if isinstance(event, LayerStat):
            job.close()  # what the Cancel button does
            break
    return written


def show_two_best(panel) -> None:
    """Select two runs on the best-trade-off line (for a screenshot that shows the comparison)."""
    panel.refresh()
    front = panel.plot.front_ids
    if front:
        panel.table.select_run(front[0])
    if len(front) > 1:
        panel.table.select_run(front[-1], add=True)
