"""Fault injection: bad input, full disks and killed processes never cost a person a file.

Every case goes through the command line the way a person types it, checks that the failure is one
``error:`` line with exit status 2, and hashes every input before and after.  The disk-full cases
mount a small tmpfs where the test may (root on Linux) and otherwise make the write raise ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from core import paths
from core.cli.commands import main
from core.engine.runner import checkpoint_root
from core.io import export
from core.partials import PARTIAL_MARK, sweep_leftovers
from tests.helpers import folder_digest, write_recipe

REPO = Path(__file__).resolve().parents[1]



def _only_error_line(capsys) -> str:
    """The whole of stderr, which must be exactly one line starting with ``error:``."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in lines[0] and "weights_only" not in lines[0]
    return lines[0]


def _refused(capsys, argv: list[str], *fragments: str) -> str:
    """Run the CLI, expect exit 2 and one error line holding every fragment; return the line."""
    assert main(argv) == 2
    line = _only_error_line(capsys)
    for fragment in fragments:
        assert fragment in line, line
    return line


def _no_model_loading(monkeypatch):
    """Make loading a model fail the test: the case must be refused before any loading starts."""
    def loading(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("core.engine.runner.iter_load_model", loading)
    monkeypatch.setattr("core.models.loading.iter_load_model", loading)


# -- an output only ever replaces what this app wrote -------------------------------------------------
def test_overwriting_the_folder_that_holds_the_source_is_refused(tmp_path, tiny_llama_dir, text_file, capsys):
    """The data-loss case: ``-o parent --overwrite`` where the recipe's model is ``parent/src``."""
    parent = tmp_path / "parent"
    shutil.copytree(tiny_llama_dir, parent / "src")
    (parent / "precious.txt").write_text("notes", encoding="utf-8")
    recipe = write_recipe(tmp_path / "recipe.yaml", parent / "src", text_file)
    before = folder_digest(parent)
    _refused(capsys, ["run", str(recipe), "-o", str(parent), "--overwrite"], str(parent), "the source model")
    assert folder_digest(parent) == before and sorted(p.name for p in parent.iterdir()) == ["precious.txt", "src"]


def test_a_gguf_source_two_folders_below_the_output_is_refused(tmp_path, text_file, capsys, monkeypatch):
    _no_model_loading(monkeypatch)
    parent = tmp_path / "parent"
    (parent / "a" / "b").mkdir(parents=True)
    (parent / "a" / "b" / "model.gguf").write_bytes(b"GGUF" + bytes(64))
    recipe = write_recipe(tmp_path / "recipe.yaml", parent / "a" / "b" / "model.gguf", text_file)
    before = folder_digest(parent)
    _refused(capsys, ["run", str(recipe), "-o", str(parent), "--overwrite"], "holds the source model")
    assert folder_digest(parent) == before


@pytest.mark.parametrize("where,fragment", [
    ("home", "your home folder"),
    ("root", "root of a filesystem"),
    ("app-home", "this app's data folder"),
    ("app-cache", "this app's cache folder"),
])
def test_home_roots_and_the_apps_own_folders_are_never_an_output(tmp_path, tiny_llama_dir, text_file, capsys,
                                                                 monkeypatch, where, fragment):
    _no_model_loading(monkeypatch)
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / "Documents" / "thesis.txt").write_text("years of work", encoding="utf-8")
    monkeypatch.setenv("HOME", str(home))
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)
    target = {"home": home, "root": Path("/"), "app-home": Path(os.environ[paths.HOME_ENV]),
              "app-cache": paths.cache_dir()}[where]
    target.mkdir(parents=True, exist_ok=True)
    before = folder_digest(home)
    _refused(capsys, ["run", str(recipe), "-o", str(target), "--overwrite"], fragment)
    assert folder_digest(home) == before


def test_overwrite_replaces_an_earlier_result_and_nothing_else(tmp_path, tiny_llama_dir, text_file, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)
    source = folder_digest(tiny_llama_dir)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine", encoding="utf-8")
    _refused(capsys, ["run", str(recipe), "-o", str(mine), "--overwrite"], "did not write", str(mine))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    out = tmp_path / "out"
    assert main(["-q", "run", str(recipe), "-o", str(out)]) == 0
    first = json.loads((out / "report.json").read_text())["created"]
    _refused(capsys, ["-q", "run", str(recipe), "-o", str(out)], "already exists")
    (out / "left-from-before.txt").write_text("x", encoding="utf-8")
    assert main(["-q", "run", str(recipe), "-o", str(out), "--overwrite"]) == 0
    assert not (out / "left-from-before.txt").exists() and (out / "report.json").is_file()
    assert json.loads((out / "report.json").read_text())["created"] >= first
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no hidden leftovers
    assert folder_digest(tiny_llama_dir) == source


def test_an_earlier_result_that_holds_an_input_is_never_replaced(tmp_path, tiny_llama_dir, text_file, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)
    out = tmp_path / "out"
    assert main(["-q", "run", str(recipe), "-o", str(out)]) == 0
    # the recipe file and the data inside the earlier result: both are inputs of the new run
    inner_text = out / "text.txt"
    shutil.copy(text_file, inner_text)
    inner_recipe = write_recipe(out / "again.yaml", tiny_llama_dir, inner_text)
    before = folder_digest(out)
    _refused(capsys, ["run", str(inner_recipe), "-o", str(out), "--overwrite"], "holds the")
    _refused(capsys, ["run", str(recipe), "-o", str(out), "--overwrite", "--model", str(out)], "is the source model")
    # through a symlink: the link is resolved before comparing
    link = tmp_path / "link-to-out"
    link.symlink_to(out)
    _refused(capsys, ["run", str(inner_recipe), "-o", str(link), "--overwrite"], "holds the")
    assert folder_digest(out) == before


# -- export-gguf follows the same rules ---------------------------------------------------------------
@pytest.fixture
def run_output(tmp_path, tiny_llama_dir, text_file):
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)
    out = tmp_path / "out"
    assert main(["-q", "run", str(recipe), "-o", str(out)]) == 0
    return out


def test_export_gguf_never_renames_never_writes_inside_and_replaces_only_its_own(run_output, tmp_path, capsys,
                                                                               monkeypatch):
    out = run_output
    before = folder_digest(out)
    with monkeypatch.context() as patched:  # each refusal comes before the model is loaded
        patched.setattr(export, "iter_load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError()))
        _refused(capsys, ["export-gguf", str(out), "-o", str(tmp_path / "model")], "must end in .gguf")
        assert not list(tmp_path.glob("model*"))
        _refused(capsys, ["export-gguf", str(out), "-o", str(out / "inside.gguf")], "inside the result folder")
        theirs = tmp_path / "downloaded.gguf"
        theirs.write_bytes(b"GGUF" + bytes(100))
        _refused(capsys, ["export-gguf", str(out), "-o", str(theirs)], "already exists")
        _refused(capsys, ["export-gguf", str(out), "-o", str(theirs), "--overwrite"], "not a GGUF file this app")
        assert theirs.read_bytes() == b"GGUF" + bytes(100)
    ours = tmp_path / "ours.gguf"
    assert main(["-q", "export-gguf", str(out), "-o", str(ours), "--type", "F16"]) == 0
    f16 = ours.stat().st_size
    _refused(capsys, ["-q", "export-gguf", str(out), "-o", str(ours)], "already exists")
    assert main(["-q", "export-gguf", str(out), "-o", str(ours), "--overwrite", "--type", "Q8_0"]) == 0
    assert 0 < ours.stat().st_size < f16  # replaced by the Q8_0 export
    assert folder_digest(out) == before
    assert oct(ours.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# -- a full disk is one line and leaves nothing ------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A folder on a 64 KiB tmpfs where the test may mount one; otherwise a folder whose writes fail with ENOSPC.

    Returns (folder, real): ``real`` says whether the disk is really full.
    """
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = sys.platform == "linux" and shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode == 0
    if not mounted:
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def no_space(*_args, **_kwargs):
            raise full

        monkeypatch.setattr("core.engine.runner.write_model_files", no_space)
        monkeypatch.setattr("core.io.gguf_export._write_file", no_space)
        monkeypatch.setattr("core.models.loading.ordinary_permissions", no_space)
    yield folder, mounted
    if mounted:
        subprocess.run(["umount", str(folder)], check=False)


def test_disk_full_while_saving_a_run(tmp_path, tiny_llama_dir, text_file, capsys, full_disk):
    folder, _real = full_disk
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)
    source = folder_digest(tiny_llama_dir)
    _refused(capsys, ["-q", "run", str(recipe), "-o", str(folder / "out")], "is full", "nothing half-written")
    assert list(folder.iterdir()) == [] and folder_digest(tiny_llama_dir) == source


def test_disk_full_while_exporting_gguf(run_output, capsys, full_disk):
    folder, _real = full_disk
    before = folder_digest(run_output)
    _refused(capsys, ["-q", "export-gguf", str(run_output), "-o", str(folder / "model.gguf"), "--type", "F16"],
             "is full")
    assert list(folder.iterdir()) == [] and folder_digest(run_output) == before


@pytest.fixture
def tiny_gguf(tmp_path, tiny_llama, tiny_tokenizer):
    """The tiny Llama as a GGUF file (our exporter), so loading it converts it into the cache."""
    from core.io.gguf_export import export_gguf

    folder = tmp_path / "gguf-source"
    folder.mkdir()
    return Path(export_gguf(tiny_llama, tiny_tokenizer, folder / "tiny.gguf", "F16")["path"])


def test_disk_full_while_converting_a_gguf_into_the_cache(tiny_gguf, capsys, monkeypatch, full_disk):
    folder, _real = full_disk
    monkeypatch.setenv(paths.CACHE_ENV, str(folder))
    before = folder_digest(tiny_gguf.parent)
    _refused(capsys, ["-q", "inspect", str(tiny_gguf), "--no-layers"], "is full", "converting tiny.gguf")
    assert not [p for p in folder.rglob("*") if p.is_file()]  # no partial conversion left in the cache
    assert folder_digest(tiny_gguf.parent) == before


# -- a process killed half-way leaves nothing that survives the next command ------------------------
_PAUSED_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    import {module} as target

    def pause(*_args, **_kwargs):
        print("PAUSED", flush=True)
        time.sleep(120)

    target.ordinary_permissions = pause  # called on the partial, just before it is renamed into place
    from core.cli.commands import main
    sys.exit(main({argv!r}))
""")


def _start_paused(module: str, argv: list[str]) -> subprocess.Popen:
    """A CLI process that stops right before its partial output would be renamed into place."""
    child = subprocess.Popen([sys.executable, "-c", _PAUSED_CHILD.format(repo=str(REPO), module=module, argv=argv)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    line = child.stdout.readline()
    if line.strip() != "PAUSED":
        child.kill()
        raise AssertionError(f"the child did not reach its save: {line!r} {child.stderr.read()[-2000:]}")
    return child


def _kill_9(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if PARTIAL_MARK in p.name] if folder.is_dir() else []


def test_kill_9_during_gguf_cache_conversion_is_cleaned_at_the_next_command(tiny_gguf, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "gguf"
    child = _start_paused("core.models.loading", ["-q", "inspect", str(tiny_gguf), "--no-layers"])
    try:
        assert len(_partials(cache)) == 1
        assert sweep_leftovers() == [] and len(_partials(cache)) == 1  # a live process's partial is left alone
    finally:
        _kill_9(child)
    assert len(_partials(cache)) == 1  # what kill -9 leaves behind
    assert main(["techniques"]) == 0  # any command cleans up at its start
    assert _partials(cache) == [] and not list((paths.data_dir() / "pending").glob("*.json"))
    capsys.readouterr()


def test_kill_9_during_export_gguf_is_cleaned_at_the_next_command(run_output, tmp_path, capsys):
    target = tmp_path / "exports"
    target.mkdir()
    child = _start_paused("core.io.gguf_export",
                          ["-q", "export-gguf", str(run_output), "-o", str(target / "model.gguf")])
    _kill_9(child)
    assert len(_partials(target)) == 1 and not (target / "model.gguf").exists()
    assert main(["techniques"]) == 0
    assert list(target.iterdir()) == []
    capsys.readouterr()


def test_kill_9_while_saving_a_run_is_cleaned_at_the_next_command(tmp_path, tiny_llama_dir, text_file, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)
    results = tmp_path / "results"
    results.mkdir()
    child = _start_paused("core.io.saving", ["-q", "run", str(recipe), "-o", str(results / "out")])
    _kill_9(child)
    assert len(_partials(results)) == 1
    assert main(["techniques"]) == 0
    assert list(results.iterdir()) == []
    capsys.readouterr()


def test_a_sweep_never_deletes_what_it_did_not_name(tmp_path):
    """A journal entry that points at a path without our partial mark (edited, or a bug) is ignored."""
    keep = tmp_path / "keep.txt"
    keep.write_text("mine", encoding="utf-8")
    pending = paths.data_dir() / "pending"
    pending.mkdir(parents=True)
    (pending / f"{uuid.uuid4().hex}.json").write_text(json.dumps({"path": str(keep), "pid": 999_999_999}))
    sweep_leftovers()
    assert keep.read_text() == "mine" and not list(pending.glob("*.json"))


# -- every other failure: one line, before any work where it can be ----------------------------------
@pytest.mark.parametrize("prompts,fragment", [
    ([1, {"a": "b"}], "prompts must be a list of text items"),
    ({"first": "hello"}, "prompts must be list"),
    (5, "prompts must be list"),
])
def test_a_recipe_field_of_the_wrong_type_is_refused_before_loading(tmp_path, tiny_llama_dir, text_file, capsys,
                                                                     monkeypatch, prompts, fragment):
    _no_model_loading(monkeypatch)
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file, evaluation={"prompts": prompts})
    _refused(capsys, ["run", str(recipe), "-o", str(tmp_path / "out")], fragment)
    assert not (tmp_path / "out").exists()


def test_every_recipe_field_rejects_every_wrong_type_with_a_recipe_error():
    """Each field of every section and every technique, given values of the wrong kind: a RecipeError or a
    value of the declared type, never another exception (which would surface after the model loaded)."""
    import typing

    from core.engine.params import param_specs
    from core.engine.recipe import DataSpec, EvalSpec, ModelSpec, OutputSpec, Recipe
    from core.engine.registry import techniques
    from core.errors import RecipeError

    wrong = [None, [], {}, "text", 1.5, -1, True, [1], {"a": 1}, [[1]], "", 10**12, float("nan"), [None]]

    def accepted_or_refused(raw: dict) -> None:
        try:
            recipe = Recipe.from_dict(raw)
            recipe.validate()
        except RecipeError:
            return
        for part in (recipe.model, recipe.data, recipe.evaluation, recipe.output,
                     *(step.config for step in recipe.steps)):
            for spec in param_specs(type(part)):
                value = getattr(part, spec.name)
                base = typing.get_origin(spec.type) or spec.type
                if base in (int, float, str, bool, list):
                    assert isinstance(value, base), (raw, spec.name, value)
                    if base is list and typing.get_args(spec.type):
                        inner = typing.get_args(spec.type)[0]
                        assert all(isinstance(item, inner) for item in value), (raw, spec.name, value)

    for section in ("name", "description", "seed", "model", "data", "evaluation", "output", "steps"):
        for value in wrong:
            accepted_or_refused({section: value})
    for section, cls in (("model", ModelSpec), ("data", DataSpec), ("evaluation", EvalSpec), ("output", OutputSpec)):
        for spec in param_specs(cls):
            for value in wrong:
                accepted_or_refused({section: {spec.name: value}})
    for name, info in techniques().items():
        for value in wrong:
            accepted_or_refused({"steps": [{"technique": name, "params": value}]})
            accepted_or_refused({"steps": [{"technique": name, "enabled": value}]})
            for spec in param_specs(info.config_cls):
                accepted_or_refused({"steps": [{"technique": name, "params": {spec.name: value}}]})


class _RunsCode:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["malicious", "damaged"])
def test_a_bad_checkpoint_on_resume_is_one_line_and_never_advises_unpickling(tmp_path, tiny_llama_dir, text_file,
                                                                             capsys, kind):
    recipe_path = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file, steps=[
        {"technique": "distill_causal_lm", "params": {"student": "current", "max_steps": 4, "eval_every": 2,
                                                      "batch_size": 2, "train_windows": 8, "validation_windows": 2}}])
    from core.engine.recipe import load_recipe

    out = tmp_path / "out"
    latest = checkpoint_root(load_recipe(recipe_path), out) / "step-0-distill" / "latest"
    latest.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    if kind == "malicious":
        torch.save({"step": 2, "payload": _RunsCode(marker)}, latest / "state.pt")
    else:
        (latest / "state.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    (latest / "weights.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    source = folder_digest(tiny_llama_dir)
    line = _refused(capsys, ["-q", "run", str(recipe_path), "-o", str(out), "--resume"],
                    "damaged or was not written by this app", "without resume")
    assert "weights_only" not in line and not marker.exists() and not out.exists()
    assert folder_digest(tiny_llama_dir) == source


def test_config_weights_mismatch_is_one_line_without_the_load_report(tmp_path, tiny_llama_dir, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["intermediate_size"] = 96
    (broken / "config.json").write_text(json.dumps(config))
    before = folder_digest(broken)
    assert main(["-q", "inspect", str(broken), "--no-layers"]) == 2
    captured = capsys.readouterr()
    assert "LOAD REPORT" not in captured.out + captured.err and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "do not match its config.json" in lines[0]
    assert re.search(r"is \[(128, 64|64, 128)\] in the weights but \[(96, 64|64, 96)\] by config.json", lines[0])
    assert folder_digest(broken) == before


@pytest.mark.parametrize("argv", [
    ["eval", "bundled:smollm2-135m", "--sequence-length", "abc"],
    ["export-gguf", "somewhere", "-o", "x.gguf", "--type", "Q9_Z"],  # no such GGUF type (Q2_K now is one)
    ["run"],
    ["no-such-command"],
])
def test_a_bad_command_line_is_one_error_line_and_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    _only_error_line(capsys)


def test_a_folder_without_a_tokenizer_says_which_files_are_missing(tmp_path, tiny_llama_dir, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_llama_dir, bare)
    for path in bare.glob("tokenizer*"):
        path.unlink()
    _refused(capsys, ["-q", "inspect", str(bare), "--no-layers"], "has no tokenizer", "tokenizer.json", "vocab.json")


@pytest.mark.parametrize("problem,fragment", [
    ("missing", "File not found"),
    ("empty", "is empty"),
    ("binary", "binary file"),
    ("column", "has no column 'text'"),
])
def test_data_files_are_checked_before_the_model_loads(tmp_path, tiny_llama_dir, capsys, monkeypatch,
                                                        problem, fragment):
    _no_model_loading(monkeypatch)
    data = {"missing": tmp_path / "nowhere.txt", "empty": tmp_path / "empty.txt",
            "binary": tmp_path / "blob.txt", "column": tmp_path / "rows.jsonl"}[problem]
    if problem == "empty":
        data.write_text("")
    elif problem == "binary":
        data.write_bytes(b"\x00\x01\x02" * 100)
    elif problem == "column":
        data.write_text('{"body": "some text"}\n')
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, data)
    _refused(capsys, ["run", str(recipe), "-o", str(tmp_path / "out")], fragment)
    _refused(capsys, ["eval", str(tiny_llama_dir), "--data", str(data)], fragment)


@pytest.mark.parametrize("flag,value", [("--max-windows", "-1"), ("--max-windows", "100001"),
                                        ("--sequence-length", "8"), ("--sequence-length", "9000")])
def test_eval_has_the_same_bounds_as_recipes(tiny_llama_dir, capsys, monkeypatch, flag, value):
    _no_model_loading(monkeypatch)
    _refused(capsys, ["eval", str(tiny_llama_dir), flag, value], f"{flag} = {value}",
             "is not allowed")


# -- a damaged or read-only app home is said once, also under -q -------------------------------------
def test_an_unusable_app_home_is_said_once_even_when_quiet(tmp_path, tiny_llama_dir, text_file, capsys, monkeypatch):
    home = tmp_path / "home-that-is-a-file"
    home.write_text("not a folder")
    monkeypatch.setenv(paths.HOME_ENV, str(home))
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)
    assert main(["-q", "run", str(recipe), "-o", str(tmp_path / "out")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: This run is not being recorded"), warnings


def test_a_damaged_history_file_is_said_once_even_when_quiet(tmp_path, tiny_llama_dir, text_file, capsys):
    history = paths.data_dir() / "history.sqlite3"
    history.parent.mkdir(parents=True, exist_ok=True)
    history.write_bytes(b"this is not a database" * 100)
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)
    assert main(["-q", "run", str(recipe), "-o", str(tmp_path / "out")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and "damaged" in warnings[0] and warnings[0].startswith("warning:"), warnings


def test_recipe_yaml_of_a_run_round_trips_through_yaml():
    """The typed list fields still read from and write to plain YAML lists."""
    from core.engine.recipe import recipe_from_text

    recipe = recipe_from_text(yaml.safe_dump({"evaluation": {"prompts": ["Hello", "Bonjour"]}, "steps": [
        {"technique": "magnitude_prune", "params": {"sparsity": 0.5, "targets": ["*proj"]}}]}))
    again = recipe_from_text(recipe.to_yaml())
    assert again.evaluation.prompts == ["Hello", "Bonjour"] and again.steps[0].config.targets == ["*proj"]


def test_the_app_cleans_up_at_start(tmp_path):
    """The window's start-up job sweeps what a killed process left, and says so in its log."""
    from core.events import Log
    from gui.jobs import probe_environment
    from tests.helpers import collect

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cache = paths.cache_dir() / "gguf"
    cache.mkdir(parents=True, exist_ok=True)
    stale = cache / f".tiny-0123{PARTIAL_MARK}{dead.pid}-abcdef12"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(bytes(1000))
    events, _ = collect(probe_environment())
    assert not stale.exists()
    assert any(isinstance(e, Log) and "Cleaned up" in e.message and stale.name in e.message for e in events)


def test_report_replaces_only_a_report_this_app_wrote(run_output, tmp_path, capsys):
    page = tmp_path / "page.html"
    page.write_text("<html>my own page</html>", encoding="utf-8")
    _refused(capsys, ["report", str(run_output), "-o", str(page)], "did not write")
    assert page.read_text(encoding="utf-8") == "<html>my own page</html>"
    assert main(["report", str(run_output)]) == 0 and main(["report", str(run_output)]) == 0  # its own: replaced
    capsys.readouterr()
