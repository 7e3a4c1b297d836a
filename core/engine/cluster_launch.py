"""A folder to copy to a cluster: the recipe, and the exact commands that run it on N machines × G GPUs.

The files (:data:`FILES`):

    recipe.yaml              the recipe, as the app would run it
    launch.sh                torchrun, run once on every machine (NODE_RANK and MASTER_ADDR set per machine)
    accelerate_config.yaml   the same layout for ``accelerate launch --config_file accelerate_config.yaml``
    HOW-TO-RUN.txt           the same instructions the app shows, in plain words

Both commands start one process per GPU through torch.distributed (see :mod:`core.engine.distributed`): the
calibration windows are shared among the processes, and rank 0 writes the result folder ``result/``,
which the app opens with Compare → "Open a saved result…".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from core.engine.recipe import Recipe
from core.errors import StudioError
from core.io.export import write_text_atomic

FILES = ("recipe.yaml", "launch.sh", "accelerate_config.yaml", "HOW-TO-RUN.txt")
PORT = 29500
RESULT = "result"


@dataclass(frozen=True)
class ClusterLayout:
    """Where the run goes: ``machines`` nodes with ``per_machine`` processes each (one per GPU, or CPU processes)."""

    machines: int = 1
    per_machine: int = 2
    gpus: bool = True

    def __post_init__(self) -> None:
        if not (1 <= self.machines <= 1024 and 1 <= self.per_machine <= 64):
            raise StudioError("choose 1–1024 machines and 1–64 processes per machine")

    @property
    def processes(self) -> int:
        return self.machines * self.per_machine


def cli_arguments(layout: ClusterLayout) -> str:
    """What every process runs: the command line's ``run`` on the recipe next to it."""
    return f"-m core.cli.commands run recipe.yaml --output {RESULT} --device {'cuda' if layout.gpus else 'cpu'}"


def torchrun_command(layout: ClusterLayout) -> str:
    """The torchrun line (one machine: ``--standalone``; several: a fixed rendezvous on machine 0)."""
    if layout.machines == 1:
        where = "--standalone"
    else:
        where = (f'--nnodes {layout.machines} --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR" '
                 f"--master_port {PORT}")
    return f"torchrun {where} --nproc_per_node {layout.per_machine} {cli_arguments(layout)}"


def accelerate_command(layout: ClusterLayout) -> str:
    """The same run through ``accelerate launch`` and :func:`accelerate_config`."""
    rank = ' --machine_rank "$NODE_RANK"' if layout.machines > 1 else ""
    return f"accelerate launch --config_file accelerate_config.yaml{rank} {cli_arguments(layout)}"


def accelerate_config(layout: ClusterLayout) -> dict:
    """accelerate's config file for this layout (``accelerate config`` writes the same keys)."""
    return {"compute_environment": "LOCAL_MACHINE",
            "distributed_type": "MULTI_GPU" if layout.gpus else "MULTI_CPU",
            "num_machines": layout.machines, "num_processes": layout.processes, "machine_rank": 0,
            "main_process_ip": "MACHINE-0-ADDRESS" if layout.machines > 1 else "127.0.0.1",
            "main_process_port": PORT, "rdzv_backend": "static", "same_network": True,
            "mixed_precision": "no", "use_cpu": not layout.gpus, "gpu_ids": "all" if layout.gpus else None}


def instructions(layout: ClusterLayout, folder: Path | None = None) -> str:
    """What to copy where and what to type, in plain words (shown by the app and written as HOW-TO-RUN.txt)."""
    where = f"the folder {folder}" if folder else "this folder"
    units = "GPUs" if layout.gpus else "processes"
    steps = [f"1. Copy {where} to the cluster (every machine needs it, e.g. on a shared disk). The cluster "
             "needs this app installed (pip install the project, so `python -m core.cli.commands` works) and "
             "the model and data files the recipe names, at the same paths — or edit the paths in recipe.yaml."]
    if layout.machines == 1:
        steps.append(f"2. On the machine, inside the folder, run:  sh launch.sh   (starts {layout.per_machine} "
                     f"{units}).")
    else:
        steps.append(f"2. On each of the {layout.machines} machines, inside the folder, run:  "
                     "NODE_RANK=<0 to " f"{layout.machines - 1}> MASTER_ADDR=<address of machine 0> sh launch.sh   "
                     f"(each machine starts {layout.per_machine} {units}; machine 0 must be reachable on port {PORT}).")
    steps.append(f"   Or, with accelerate: {accelerate_command(layout)}"
                 + ("  (first put machine 0's address in accelerate_config.yaml)" if layout.machines > 1 else ""))
    steps.append(f"3. The {layout.processes} processes share the calibration work; machine 0 writes the compressed "
                 f"model into {RESULT}/ next to recipe.yaml. If any process stops, the run stops and writes nothing.")
    steps.append(f"4. Copy {RESULT}/ back here and open it in the app: Compare → “Open a saved result…”.")
    return "\n".join(steps) + "\n"


def write_cluster_folder(recipe: Recipe, folder: str | Path, layout: ClusterLayout) -> list[Path]:
    """Write :data:`FILES` for ``recipe`` into ``folder`` (made if missing); return their paths.

    Files already there are never replaced: choose an empty folder.  Each file is written atomically.
    """
    recipe.validate()
    if not recipe.enabled_steps():
        raise StudioError("the recipe has no enabled steps: add or switch on at least one technique first")
    if not recipe.model.source:
        raise StudioError("choose a model first: the recipe for the cluster names the model to compress")
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise StudioError(f"{folder} is a file; choose a folder for the cluster files")
    taken = [name for name in FILES if (folder / name).exists()]
    if taken:
        raise StudioError(f"{folder} already holds {', '.join(taken)}; choose an empty folder so nothing is replaced")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudioError(f"cannot make {folder}: {exc.strerror or exc}") from exc
    machines = ("" if layout.machines == 1 else
                ': "${NODE_RANK:?set NODE_RANK to this machine\'s number, 0 to '
                f'{layout.machines - 1}}}" "${{MASTER_ADDR:?set MASTER_ADDR to machine 0\'s address}}"\n')
    script = ("#!/bin/sh\n"
              f"# Runs recipe.yaml on {layout.machines} machine(s) × {layout.per_machine} "
              f"{'GPUs' if layout.gpus else 'CPU processes'}; see HOW-TO-RUN.txt.\n"
              "set -e\n"
              'cd "$(dirname "$0")"\n' + machines + f"exec {torchrun_command(layout)}\n")
    contents = {"recipe.yaml": recipe.to_yaml(), "launch.sh": script,
                "accelerate_config.yaml": yaml.safe_dump(accelerate_config(layout), sort_keys=False),
                "HOW-TO-RUN.txt": instructions(layout)}
    written = []
    for name in FILES:
        path = folder / name
        write_text_atomic(path, contents[name])
        written.append(path)
    (folder / "launch.sh").chmod(0o755)
    return written

