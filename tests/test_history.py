"""The run history: recorded runs, their final status, damaged files, concurrency, Pareto front."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading

import pytest

from core.cli.history import history_lines
from core.engine import registry
from core.engine.recipe import load_recipe
from core.eval.pareto import dominates, pareto_front
from core.events import LayerStat, Log
from core.history.recovery import delete_output, folder_size, process_start_time
from core.history.store import SCHEMA_VERSION, History, HistoryError, RunRecord, recorded_run
from core.history.summary import summarize_report
from tests.helpers import collect, write_recipe


@pytest.fixture
def recipe(tmp_path, tiny_llama_dir, text_file):
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file))


def test_done_run_is_recorded_with_its_numbers(tmp_path, recipe, studio_home):
    out = tmp_path / "out"
    events, report = collect(recorded_run(recipe, out, origin="test"))
    assert any(isinstance(e, Log) and "run #1" in e.message for e in events)
    history = History()
    assert history.path.is_relative_to(studio_home)
    (run,) = history.runs()
    assert run.status == "done" and run.origin == "test" and run.output == str(out.resolve())
    assert run.finished and run.finished >= run.started
    assert run.recipe().to_dict() == recipe.to_dict()
    assert run.metric("perplexity_after") == pytest.approx(report["after"]["perplexity"]["perplexity"])
    assert run.metric("bytes_on_disk_after") == (out / "model.safetensors").stat().st_size
    assert run.metric("kl_to_teacher") > 0 and run.metrics["steps"] == ["magnitude_prune"]
    assert run.metric("nonzero_parameters_after") < run.metric("nonzero_parameters_before")


def test_failed_and_cancelled_runs_are_recorded(tmp_path, recipe, monkeypatch):
    job = recorded_run(recipe, tmp_path / "cancelled")
    for event in job:
        if isinstance(event, LayerStat):
            job.close()
            break
    info = registry.get_technique("magnitude_prune")

    def broken(model, config, ctx):
        yield Log("about to fail")
        raise RuntimeError("the step broke")

    monkeypatch.setitem(registry._REGISTRY, "magnitude_prune",
                        registry.TechniqueInfo(info.name, info.title, info.family, info.summary, info.config_cls,
                                               broken))
    with pytest.raises(RuntimeError):
        collect(recorded_run(recipe, tmp_path / "failed"))
    failed, cancelled = History().runs()
    assert cancelled.status == "cancelled" and "nothing was written" in cancelled.message
    assert failed.status == "failed" and failed.message == "the step broke"
    assert failed.metrics == {"steps": ["magnitude_prune"]} == cancelled.metrics  # what it was going to do
    assert not (tmp_path / "cancelled").exists() and not (tmp_path / "failed").exists()


def test_a_run_still_happens_when_the_history_cannot_be_written(tmp_path, recipe, monkeypatch):
    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(History, "start_run", refuse)
    events, report = collect(recorded_run(recipe, tmp_path / "out"))
    assert report["after"] and any(e.level == "warning" and "not being recorded" in e.message
                                   for e in events if isinstance(e, Log))


KILLED_RUN = """
import sys, time
import core.engine.runner
from core.events import LayerStat
from core.history.store import recorded_run
from core.engine.recipe import load_recipe

recipe_path, output, where = sys.argv[1:4]
if where == "save":
    write = core.engine.runner.write_run_files

    def write_then_hang(folder, *args, **kwargs):
        write(folder, *args, **kwargs)
        print("SAVING", folder, flush=True)
        time.sleep(120)

    core.engine.runner.write_run_files = write_then_hang
for event in recorded_run(load_recipe(recipe_path), output, origin="killed"):
    if where == "steps" and isinstance(event, LayerStat):
        print("STEP", flush=True)
        time.sleep(120)
"""


def _run_and_kill(tmp_path, recipe_path, output, where):
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN, encoding="utf-8")
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, str(script), str(recipe_path), str(output), where],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
                            env={**__import__("os").environ, "PYTHONPATH": root})
    try:
        line = proc.stdout.readline()
        assert line.split()[:1] in (["STEP"], ["SAVING"]), proc.stderr.read()
        running = History(recover=False).runs()
        assert [r.status for r in running] == ["running"] and running[0].pid == proc.pid
        proc.kill()  # SIGKILL: no finally block, no atexit, nothing runs in the child
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return line


@pytest.mark.parametrize("where", ["steps", "save"])
def test_kill_9_mid_run_shows_interrupted_and_leaves_no_output(tmp_path, recipe, where):
    recipe_path = tmp_path / "recipe.yaml"
    output = tmp_path / "out"
    line = _run_and_kill(tmp_path, recipe_path, output, where)
    if where == "save":  # killed inside the atomic save: its hidden temporary folder is there
        assert [p.name for p in tmp_path.glob(".out.partial-*")] == [line.split()[1].rsplit("/", 1)[-1]]
    history = History()
    (run,) = history.runs()
    assert run.status == "interrupted" and history.recovered == [run.id]
    assert "stopped before the end" in run.message
    assert not output.exists()
    assert not list(tmp_path.glob(".out*"))  # the killed save's temporary folder was cleaned away
    if where == "save":
        assert "removed the unfinished save" in run.message


def test_saved_but_unrecorded_run_becomes_done(tmp_path, recipe):
    out = tmp_path / "out"
    collect(recorded_run(recipe, out))
    history = History()
    (run,) = history.runs()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with history.connect(write=True) as conn:  # as if killed right after the rename, before the update
        conn.execute("UPDATE runs SET status='running', metrics='{}', pid=?, process_started=1.0 WHERE id=?",
                     (dead.pid, run.id))
    reopened = History()
    run = reopened.get(run.id)
    saved = json.loads((out / "report.json").read_text())  # recovered from the run's own report
    assert run.status == "done" and run.metric("perplexity_after") == saved["after"]["perplexity"]["perplexity"]
    assert "report.json" in run.message and out.is_dir()


def test_live_process_stays_running_and_pid_reuse_is_not_mistaken(recipe, tmp_path):
    history = History()
    mine = history.start_run(recipe, tmp_path / "a")
    reused = history.start_run(recipe, tmp_path / "b")
    with history.connect(write=True) as conn:  # same pid, but a process that started at another time
        conn.execute("UPDATE runs SET process_started = process_started - 100 WHERE id = ?", (reused,))
    History()
    assert history.get(mine).status == "running"
    assert history.get(reused).status == "interrupted"
    with pytest.raises(HistoryError, match="still running"):
        history.delete(mine)
    assert process_start_time(10**7) is None


def test_damaged_file_is_moved_aside(studio_home):
    history = History()
    history.path.write_bytes(b"this is not a database" * 100)
    fresh = History()
    assert fresh.notice and "damaged" in fresh.notice and fresh.runs() == []
    aside = list(history.path.parent.glob("history.sqlite3.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    assert str(aside[0]) in fresh.notice


def test_newer_schema_is_refused_not_overwritten():
    history = History()
    with history.connect() as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryError, match="newer version"):
        History()
    assert history.path.exists()


def test_concurrent_writers(recipe, tmp_path):
    History()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            history = History(recover=False)
            for i in range(25):
                run_id = history.start_run(recipe, tmp_path / f"{n}-{i}")
                history.finish_run(run_id, "done", metrics={"bytes_on_disk_after": i})
                history.runs()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    runs = History().runs()
    assert len(runs) == 100 and {r.status for r in runs} == {"done"}
    assert [r.id for r in runs] == sorted((r.id for r in runs), reverse=True)
    with History().connect() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_delete_record_and_output(tmp_path, recipe):
    out = tmp_path / "out"
    collect(recorded_run(recipe, out))
    history = History()
    (run,) = history.runs()
    assert folder_size(out) > (out / "model.safetensors").stat().st_size
    not_ours = tmp_path / "not-a-run"
    not_ours.mkdir()
    with pytest.raises(Exception, match="does not look like"):
        delete_output(not_ours)
    delete_output(out)
    history.delete(run.id)
    assert not out.exists() and history.runs() == [] and not_ours.exists()


def test_summarize_classification_report():
    report = {"before": {"bytes_on_disk": 100, "parameters": 10, "classification": {"accuracy": 0.9, "macro_f1": 0.8}},
              "after": {"bytes_on_disk": 50, "parameters": 10, "classification": {"accuracy": 0.85}},
              "comparison": {}, "steps": [{"technique": "distill"}], "seconds": 3.5}
    summary = summarize_report(report)
    assert summary == {"bytes_on_disk_before": 100, "parameters_before": 10, "accuracy_before": 0.9,
                       "macro_f1_before": 0.8, "bytes_on_disk_after": 50, "parameters_after": 10,
                       "accuracy_after": 0.85, "seconds": 3.5, "steps": ["distill"]}


def test_pareto_front_lower_is_better():
    points = [(100, 10.0), (50, 12.0), (50, 11.0), (80, 10.5), (90, 10.6), (30, 20.0), (None, 1.0),
              (120, 9.0), (120, 9.0), (130, float("nan"))]
    front = pareto_front(points)
    assert front == [5, 2, 3, 0, 7, 8]
    for i, p in enumerate(points):
        if i in front or None in p or p[1] != p[1]:
            continue
        assert any(dominates(points[j], p) for j in front)


def test_pareto_front_higher_is_better_and_edge_cases():
    assert pareto_front([(10, 0.8), (5, 0.7), (7, 0.9), (12, 0.95), (6, 0.6)], higher_is_better=True) == [1, 2, 3]
    assert pareto_front([]) == []
    assert pareto_front([(1, 1)]) == [0]
    assert dominates((1, 0.9), (2, 0.8), higher_is_better=True)
    assert not dominates((1, 1), (1, 1))


def test_cli_runs_are_recorded_and_listed(tmp_path, capsys, tiny_llama_dir, text_file):
    from core.cli.commands import main

    recipe_path = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)
    assert main(["-q", "run", str(recipe_path), "-o", str(tmp_path / "out")]) == 0
    assert main(["-q", "run", str(recipe_path), "-o", str(tmp_path / "out")]) == 2  # exists: refused before any work
    assert len(History().runs()) == 1  # a refusal is one line at once, not a run worth recording
    too_long = write_recipe(tmp_path / "long.yaml", tiny_llama_dir, text_file, data={"sequence_length": 8192})
    assert main(["-q", "run", str(too_long), "-o", str(tmp_path / "out2")]) == 2  # fails after loading: recorded
    (refused, run) = History().runs()
    assert run.origin == "cli" and run.status == "done" and refused.status == "failed"
    assert "too short" in refused.message
    capsys.readouterr()
    assert main(["history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == [str(refused.id), run.started[:10]] and "failed" in lines[1]
    # 50% zeros saved dense is the original's size: no star, however good (the History page's rule)
    assert lines[3].startswith(f"{run.id:>4} ") and "done" in lines[3] and "ppl" in lines[3]
    assert not any(line.startswith("* best trade-off") for line in lines)
    assert main(["history", "--json"]) == 0
    assert '"status": "done"' in capsys.readouterr().out


def _record(run_id: int, after_mb: float, ppl_after: float, before_mb: float = 100.0, ppl_before: float = 10.0,
            status: str = "done") -> RunRecord:
    return RunRecord(run_id, "2026-12-06T10:00:00", None, status, f"run {run_id}", "", "m", "causal-lm", "cpu", "out",
                     {"bytes_on_disk_after": after_mb * 1e6, "perplexity_after": ppl_after,
                      "bytes_on_disk_before": before_mb * 1e6, "perplexity_before": ppl_before})


def test_cli_history_stars_only_results_smaller_than_their_original():
    records = [_record(1, 50.0, 12.0),  # half the size, a little worse: best
               _record(2, 100.0, 9.0),  # better but the original's size: not smaller, never best
               _record(3, 60.0, 13.0),  # larger and worse than run 1: dominated
               _record(4, 30.0, 20.0, status="failed")]
    stars = {int(line[:4]) for line in history_lines(records)[1:] if line[:4].strip().isdigit() and line[4] == "*"}
    assert stars == {1}
    assert history_lines(records)[-1].startswith("* best trade-off")
    assert not any("best trade-off" in line for line in history_lines([_record(2, 100.0, 9.0)]))


def test_overwrite_killed_between_renames_puts_the_old_folder_back(tmp_path, recipe):
    history = History()
    run_id = history.start_run(recipe, tmp_path / "out")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with history.connect(write=True) as conn:
        conn.execute("UPDATE runs SET pid = ? WHERE id = ?", (dead.pid, run_id))
    old = tmp_path / ".out.old-1234abcd"
    old.mkdir()
    (old / "report.json").write_text("{}")
    (tmp_path / ".out.partial-5678abcd").mkdir()
    run = History().get(run_id)
    assert run.status == "interrupted" and "back in place" in run.message
    assert (tmp_path / "out" / "report.json").is_file() and not old.exists()
    assert not (tmp_path / ".out.partial-5678abcd").exists()
