"""The command line: the happy paths, and one clear error line with a non-zero exit for bad input."""

import shutil
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM

from core.cli.commands import main
from tests.helpers import folder_digest, write_recipe


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    return err[-1]


def test_inspect_prints_layer_table(tiny_llama_dir, capsys):
    assert main(["-q", "inspect", str(tiny_llama_dir)]) == 0
    out = capsys.readouterr().out
    assert "LlamaForCausalLM" in out and "model.layers.1.mlp.down_proj" in out and "Parameters" in out


def test_eval_prints_perplexity(tiny_llama_dir, text_file, capsys):
    assert main(["-q", "eval", str(tiny_llama_dir), "--data", str(text_file), "--sequence-length", "16"]) == 0
    assert "Perplexity" in capsys.readouterr().out


def test_run_writes_loadable_folder(tmp_path, tiny_llama_dir, text_file, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file)
    assert main(["-q", "run", str(recipe), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "Before" in out and "After" in out and "perplexity" in out
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


@pytest.mark.parametrize("args, message", [
    (["inspect", "/no/such/model"], "model not found"),
    (["run", "/no/such/recipe.yaml", "-o", "/tmp/x"], "recipe file not found"),
    (["eval", "bundled:no-such-model"], "unknown bundled model"),
])
def test_bad_inputs_give_one_clear_line(args, message, capsys):
    assert main(["-q", *args]) == 2
    line = _error_line(capsys)
    assert line.startswith("error: ") and message in line


def test_non_model_folder(tmp_path, capsys):
    (tmp_path / "readme.txt").write_text("not a model")
    assert main(["-q", "inspect", str(tmp_path)]) == 2
    assert "not a model folder" in _error_line(capsys)


def test_corrupt_safetensors_leaves_source_unchanged(tmp_path, tiny_llama_dir, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    before = folder_digest(broken)
    assert main(["-q", "inspect", str(broken)]) == 2
    assert "damaged or incomplete" in _error_line(capsys)
    assert folder_digest(broken) == before


def test_invalid_recipe_value(tmp_path, tiny_llama_dir, text_file, capsys):
    recipe = tmp_path / "r.yaml"
    write_recipe(recipe, tiny_llama_dir, text_file)
    recipe.write_text(recipe.read_text().replace("sparsity: 0.5", "sparsity: 1.5"))
    assert main(["-q", "run", str(recipe), "-o", str(tmp_path / "out")]) == 2
    assert "sparsity = 1.5 is not allowed" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_output_inside_source_refused(tmp_path, tiny_llama_dir, text_file, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_llama_dir, text_file)
    before = folder_digest(tiny_llama_dir)
    assert main(["-q", "run", str(recipe), "-o", str(tiny_llama_dir / "out")]) == 2
    assert "inside the source model" in _error_line(capsys)
    assert folder_digest(tiny_llama_dir) == before


def test_console_script_exit_code(tmp_path):
    """The installed entry point exits non-zero with one line on stderr."""
    result = subprocess.run([sys.executable, "-m", "core.cli.commands", "inspect", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: model not found")


def test_techniques_lists_parameters(capsys):
    assert main(["techniques"]) == 0
    out = capsys.readouterr().out
    assert "magnitude_prune" in out and "0.0 ≤ sparsity < 1.0" in out
