"""Run → "Run on a cluster…" (issue 18, item 4): the folder it writes runs as written, and the dialog writes it.

The core test runs the written ``launch.sh`` itself (torchrun, two CPU processes) and opens the result the
way Compare's "Open a saved result…" does; the GUI test drives the dialog from the Run menu.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

from core.engine.cluster_launch import FILES, ClusterLayout, write_cluster_folder  # noqa: E402
from core.engine.recipe import load_recipe  # noqa: E402
from core.errors import StudioError  # noqa: E402
from tests.helpers import write_recipe  # noqa: E402


def _recipe(tmp_path, tiny_llama_dir, text_file):
    path = write_recipe(tmp_path / "source.yaml", tiny_llama_dir, text_file, data={"calibration_windows": 6},
                        evaluation={"kl_to_teacher": False},
                        steps=[{"technique": "wanda_prune", "params": {"sparsity": 0.5}}])
    return load_recipe(path)


def test_the_written_launch_script_runs_the_recipe_on_two_processes(tmp_path, tiny_llama_dir, text_file):
    from core.eval.compare import read_output_folder

    recipe = _recipe(tmp_path, tiny_llama_dir, text_file)
    folder = tmp_path / "for-the-cluster"
    write_cluster_folder(recipe, folder, ClusterLayout(machines=1, per_machine=2, gpus=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["sh", str(folder / "launch.sh")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = read_output_folder(folder / "result")  # what Compare's "Open a saved result…" reads
    assert saved.report["steps"][0]["technique"] == "wanda_prune"
    assert saved.report["after"]["nonzero_parameters"] < saved.report["before"]["nonzero_parameters"]
    assert load_recipe(folder / "recipe.yaml").to_yaml() == recipe.to_yaml()


def test_several_machines_get_a_rendezvous_and_nothing_is_replaced(tmp_path, tiny_llama_dir, text_file):
    recipe = _recipe(tmp_path, tiny_llama_dir, text_file)
    folder = tmp_path / "cluster"
    write_cluster_folder(recipe, folder, ClusterLayout(machines=3, per_machine=8))
    script = (folder / "launch.sh").read_text()
    assert ("torchrun --nnodes 3 --node_rank \"$NODE_RANK\" --master_addr \"$MASTER_ADDR\" --master_port 29500 "
            "--nproc_per_node 8 -m core.cli.commands run recipe.yaml --output result --device cuda") in script
    config = yaml.safe_load((folder / "accelerate_config.yaml").read_text())
    assert (config["num_machines"], config["num_processes"], config["distributed_type"]) == (3, 24, "MULTI_GPU")
    # without NODE_RANK the script stops before starting anything, saying what to set
    missing = subprocess.run(["sh", str(folder / "launch.sh")], capture_output=True, text=True, timeout=30,
                             env={k: v for k, v in os.environ.items() if k not in ("NODE_RANK", "MASTER_ADDR")})
    assert missing.returncode != 0 and "NODE_RANK" in missing.stderr
    before = {name: (folder / name).read_bytes() for name in FILES}
    with pytest.raises(StudioError, match="already holds recipe.yaml"):
        write_cluster_folder(recipe, folder, ClusterLayout(machines=1, per_machine=2))
    assert {name: (folder / name).read_bytes() for name in FILES} == before


def test_run_menu_writes_the_pipeline_recipe_and_says_what_to_copy(qtbot, tmp_path, tiny_llama_dir, text_file):
    from gui.main_window import MainWindow
    from tests.helpers import choose_model, small_data

    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    choose_model(qtbot, window, tiny_llama_dir, 60_000)
    small_data(window.pipeline_panel.data_box, text_file)
    window.pipeline_panel.apply_recipe(_recipe(tmp_path, tiny_llama_dir, text_file))
    window.menu_actions["cluster"].trigger()
    dialog = window.cluster_dialog
    dialog.machines.setValue(2)
    dialog.per_machine.setValue(4)
    dialog.folder.setText(str(tmp_path / "copy-me"))
    dialog.write_button.click()

    folder = tmp_path / "copy-me"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert load_recipe(folder / "recipe.yaml").to_yaml() == window.pipeline_panel.build_recipe().to_yaml()
    assert load_recipe(folder / "recipe.yaml").model.source == str(tiny_llama_dir)
    assert "--nnodes 2" in (folder / "launch.sh").read_text() and "--nproc_per_node 4" in (
        folder / "launch.sh").read_text()
    assert yaml.safe_load((folder / "accelerate_config.yaml").read_text())["num_processes"] == 8
    guide = dialog.guide.toPlainText()
    assert "On each of the 2 machines" in guide and "Open a saved result" in guide and str(folder) in guide
    assert (folder / "HOW-TO-RUN.txt").read_text().startswith("1. Copy this folder")
    assert "Wrote recipe.yaml" in dialog.status.text()
    # a second write into the same folder is refused in the dialog, not by a crash
    dialog.write_button.click()
    assert dialog.status.text().startswith("Nothing was written:")
    dialog.close()
