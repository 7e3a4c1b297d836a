"""Compare table, token divergence, playground, export and HTML report in core (no Qt), on the tiny model."""

from __future__ import annotations

import json

import pytest

from core.engine.recipe import load_recipe
from core.engine.runner import run_recipe
from core.errors import StudioError
from core.eval.compare import (
    NOT_MEASURED,
    OutputFolderError,
    compare_rows,
    read_output_folder,
    token_divergence,
)
from tests.helpers import collect, folder_digest, write_recipe


@pytest.fixture
def run_output(tmp_path, tiny_llama_dir, text_file):
    """A finished run of a 50% magnitude pruning of the tiny Llama, speed measured."""
    recipe = load_recipe(write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file))
    recipe.evaluation.speed = True
    out = tmp_path / "out"
    _, report = collect(run_recipe(recipe, out))
    return out, report


# -- the table ---------------------------------------------------------------------------------------
def test_compare_rows_take_every_number_from_the_report(run_output):
    out, report = run_output
    rows = {row.key: row for row in compare_rows(read_output_folder(out).report)}
    assert set(rows) == {"parameters", "nonzero_parameters", "disk_mb", "memory_mb", "decode_tokens_per_s",
                         "perplexity", "kl_to_teacher"}
    assert all(row.measured and not row.missing for row in rows.values())
    assert rows["parameters"].teacher == report["before"]["parameters"]
    assert rows["parameters"].ratio == pytest.approx(1.0)  # pruning keeps the shape
    assert rows["nonzero_parameters"].ratio < 0.8
    assert rows["disk_mb"].student == pytest.approx(report["after"]["bytes_on_disk"] / 1e6)
    assert rows["decode_tokens_per_s"].student == report["after"]["speed"]["decode_tokens_per_s"] > 0
    assert rows["perplexity"].student == report["after"]["perplexity"]["perplexity"]
    assert rows["kl_to_teacher"].teacher == 0
    assert rows["kl_to_teacher"].student == report["comparison"]["kl_per_token"] > 0
    assert rows["kl_to_teacher"].ratio is None  # no ratio to a zero


def test_unmeasured_numbers_say_how_to_measure_them():
    report = {"task": "causal-lm", "before": {"parameters": 10, "bytes_in_memory": 40},
              "after": {"parameters": 10, "bytes_in_memory": 20}, "comparison": {}}
    rows = {row.key: row for row in compare_rows(report)}
    assert rows["memory_mb"].ratio == pytest.approx(0.5)
    speed = rows["decode_tokens_per_s"]
    assert speed.student is None and speed.missing.startswith(NOT_MEASURED)
    assert "switch on 'Measure speed' in the evaluation settings" in speed.missing
    assert "Measure KL to original" in rows["kl_to_teacher"].missing
    classifier = {row.key: row for row in compare_rows({**report, "task": "sequence-classification"})}
    assert "accuracy" in classifier and "perplexity" not in classifier and "decode_tokens_per_s" not in classifier


def test_a_result_larger_on_disk_than_its_source_is_explained():
    from core.eval.compare import size_note

    report = {"before": {"bytes_on_disk": 98_360_000, "on_disk_is": "the source weights as stored (x.Q4_1.gguf)"},
              "after": {"bytes_on_disk": 269_100_000, "on_disk_is": "safetensors as bfloat16"}}
    note = size_note(report)
    assert "269.1 MB vs 98.4 MB" in note and "Q4_1.gguf" in note and "quantization step" in note
    report["after"]["bytes_on_disk"] = 50_000_000
    assert size_note(report) is None and size_note({}) is None


def test_read_output_folder_refuses_other_folders(tmp_path, tiny_llama_dir):
    with pytest.raises(OutputFolderError, match="not the output of a run"):
        read_output_folder(tiny_llama_dir)
    with pytest.raises(OutputFolderError, match="not a folder"):
        read_output_folder(tmp_path / "missing")


# -- token divergence --------------------------------------------------------------------------------
def test_token_divergence_marks_where_answers_part():
    same = token_divergence([1, 2, 3], [1, 2, 3])
    assert same.identical and same.teacher_same == [True] * 3 and same.matching == 3
    part = token_divergence([1, 2, 3, 4, 5], [1, 2, 9, 4, 5])
    assert part.first_difference == 2
    assert part.teacher_same == [True, True, False, True, True]  # 4, 5 line up again after the change
    assert part.student_same == [True, True, False, True, True]
    shifted = token_divergence(["a", "b", "c"], ["a", "x", "y", "b", "c"])
    assert shifted.first_difference == 1 and shifted.student_same == [True, False, False, True, True]
    assert token_divergence([1, 2], [1, 2, 3]).first_difference == 2
    empty = token_divergence([], [7])
    assert empty.first_difference == 0 and empty.student_same == [False]


# -- playground ----------------------------------------------------------------------------------------
def test_playground_answers_both_models(run_output, tiny_llama_dir):
    from core.eval.playground import iter_compare_answers, iter_load_pair

    out, report = run_output
    _, pair = collect(iter_load_pair(report["source"], out))
    _, result = collect(iter_compare_answers(pair, "The quick brown", max_new_tokens=8))
    for answer in (result.teacher, result.student):
        assert 1 <= len(answer.token_ids) <= 8 and len(answer.tokens) == len(answer.token_ids)
        assert answer.first_token_ms > 0 and answer.seconds > 0
        if len(answer.token_ids) >= 2:
            assert answer.decode_tokens_per_s > 0
    assert result.divergence.teacher_same.__len__() == len(result.teacher.token_ids)
    # Greedy and deterministic: the teacher answers the same twice.
    _, again = collect(iter_compare_answers(pair, "The quick brown", max_new_tokens=8))
    assert again.teacher.token_ids == result.teacher.token_ids
    with pytest.raises(StudioError, match="prompt is empty"):
        collect(iter_compare_answers(pair, "  "))


# -- export --------------------------------------------------------------------------------------------
def test_describe_copy_and_recipe(run_output, tmp_path):
    from transformers import AutoModelForCausalLM

    from core.io.export import describe_output, iter_copy_output, save_recipe

    out, _ = run_output
    info = describe_output(out)
    assert info.format == "transformers" and info.plain_transformers and info.gguf_problem is None
    assert "plain transformers" in info.loads_in() and "report.json" in info.files
    digest = folder_digest(out)
    _, copied = collect(iter_copy_output(out, tmp_path / "copy"))
    assert folder_digest(copied) == digest and folder_digest(out) == digest
    AutoModelForCausalLM.from_pretrained(copied)
    with pytest.raises(StudioError, match="not empty"):
        collect(iter_copy_output(out, tmp_path / "copy"))
    with pytest.raises(StudioError, match="inside"):
        collect(iter_copy_output(out, out / "sub"))
    assert load_recipe(save_recipe(out, tmp_path / "r.yaml")).name == "tiny test"


def test_cancelled_copy_leaves_nothing(run_output, tmp_path):
    from core.io.export import iter_copy_output

    out, _ = run_output
    job = iter_copy_output(out, tmp_path / "copy")
    next(job), next(job)
    job.close()  # what the app's Cancel does
    assert not (tmp_path / "copy").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".copy")]


def test_gguf_export_and_where_it_does_not_apply(run_output, tmp_path):
    from core.io.export import gguf_problem, iter_export_gguf
    from core.io.gguf_export import read_gguf_summary

    out, _ = run_output
    with pytest.raises(StudioError, match="must end in .gguf"):  # the name is never changed silently
        collect(iter_export_gguf(out, tmp_path / "tiny", "Q8_0"))
    _, written = collect(iter_export_gguf(out, tmp_path / "tiny.gguf", "Q8_0"))
    assert written["path"].endswith("tiny.gguf") and read_gguf_summary(written["path"])["architecture"] == "llama"
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    assert "causal language models" in gguf_problem({"model_type": "bert", "architectures": ["BertModel"]}, None)
    llama = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    assert "replaced" in gguf_problem(llama, {"format": "factorized"}, replaceable=False)
    assert gguf_problem(llama, {"format": "sparse"}, replaceable=True) is None
    # other families go through llama.cpp's own converter (tests/test_gguf_families.py)
    assert gguf_problem({"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"]}, None) is None


# -- HTML report and CLI ---------------------------------------------------------------------------------
def test_html_report_and_cli(run_output, tmp_path, capsys):
    from core.cli.commands import main
    from core.io.report_html import write_report

    out, report = run_output
    path = write_report(out, tmp_path / "report.html", images={"Live plots": b"\x89PNG fake"})
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") == 3
    assert f"{report['after']['perplexity']['perplexity']:.4g}" in html
    assert "data:image/png;base64," in html and "magnitude_prune" in html and "tiny test" in html

    assert main(["-q", "report", str(out), "-o", str(tmp_path / "cli.html")]) == 0
    assert "<svg" in (tmp_path / "cli.html").read_text(encoding="utf-8")
    assert main(["-q", "export-gguf", str(out), "-o", str(tmp_path / "cli.gguf"), "--type", "F16"]) == 0
    assert (tmp_path / "cli.gguf").stat().st_size > 0
    assert main(["-q", "report", str(tmp_path)]) == 2  # not a run's output folder
    assert "not the output of a run" in capsys.readouterr().err
    json.loads((out / "report.json").read_text())  # untouched


def test_a_pipeline_that_already_quantizes_is_not_told_to_add_quantization():
    """Issue 16, item 1: the 4-bit preset's result (117 MB vs the 98 MB GGUF) was advised to 'add a quantization
    step'; it has one, so the note points at the GGUF export instead."""
    from core.eval.compare import size_note

    base = {"before": {"bytes_on_disk": 98_360_000, "on_disk_is": "the source weights as stored (x.Q4_1.gguf)"},
            "after": {"bytes_on_disk": 117_300_000, "on_disk_is": "safetensors, floating-point weights as bfloat16"}}
    for step in ({"technique": "gptq_quantize", "family": "quantization"}, {"technique": "rtn_quantize"},
                 {"technique": "dynamic_int8"}):
        note = size_note({**base, "steps": [{"technique": "magnitude_prune", "family": "pruning"}, step]})
        assert "quantization step" not in note and "GGUF" in note, step
    assert "Add a quantization step" in size_note({**base, "steps": [{"technique": "wanda_prune",
                                                                        "family": "pruning"}]})


def test_a_packed_folder_off_the_gguf_blocks_says_why_gguf_is_refused_and_what_to_do():
    from core.io.export import gguf_problem

    packed = {"model_type": "llama", "quantization_config": {"format": "pack-quantized", "config_groups": {
        "group_0": {"weights": {"num_bits": 4, "group_size": 64, "symmetric": False}, "targets": []}}}}
    problem = gguf_problem(packed, None)
    assert "round its weights a second time" in problem and "q4_0" in problem and "transformers" not in problem
    on_blocks = {"model_type": "llama", "quantization_config": {"format": "pack-quantized", "config_groups": {
        "group_0": {"weights": {"num_bits": 4, "group_size": 32, "symmetric": True}, "targets": []}}}}
    assert gguf_problem(on_blocks, None) is None  # Q4_0-shaped blocks: written unchanged
