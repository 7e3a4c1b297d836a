"""Several GGUF types in one go (issue 22, item 7): one importance matrix for the queue, cancel keeps the finished
files only, and the Ollama Modelfiles and the README card say what is true of the files and the result."""

from __future__ import annotations

import pytest

import core.engine.gguf_job as gguf_job
from core.cli.commands import main
from core.engine.gguf_job import ImatrixSettings
from core.engine.gguf_queue import QueueItem, iter_gguf_queue
from core.errors import StudioError
from core.eval.compare import read_output_folder
from core.io.gguf_cards import CARD_MARK, read_gguf_facts
from core.io.llama_cpp_tools import missing_reason
from core.io.output_rules import OutputError
from tests.helpers import collect, write_recipe

needs_quantizer = pytest.mark.skipif(missing_reason("llama-quantize") is not None,
                                     reason=str(missing_reason("llama-quantize")))


def file_type(path) -> str:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return gguf.LlamaFileType(int(reader.get_field("general.file_type").contents())).name


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name]


@pytest.fixture
def count_imatrix(monkeypatch):
    """How many times the queue computes an importance matrix."""
    calls = []
    real = gguf_job.iter_imatrix_file

    def counted(*args, **kwargs):
        calls.append(kwargs.get("dataset"))
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(gguf_job, "iter_imatrix_file", counted)
    return calls


@pytest.fixture
def result(tmp_path, tiny_llama_dir, text_file):
    from core.engine.recipe import load_recipe
    from core.engine.runner import run_recipe

    out = tmp_path / "tiny-result"
    collect(run_recipe(load_recipe(write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)), out))
    return read_output_folder(out)


@pytest.mark.slow
@needs_quantizer
def test_two_types_of_the_bundled_model_from_one_importance_matrix(tmp_path, count_imatrix, session_cache):
    from core.data.samples import datasets_ready

    if not datasets_ready():
        pytest.skip("bundled datasets missing: run `make data`")
    settings = ImatrixSettings("bundled:wiki-calibration", windows=4, sequence_length=64)
    events, done = collect(iter_gguf_queue("bundled:smollm2-135m", tmp_path / "smollm.gguf", "Q4_K_M,Q5_K_M",
                                           imatrix=True, settings=settings))
    q4, q5 = tmp_path / "smollm-Q4_K_M.gguf", tmp_path / "smollm-Q5_K_M.gguf"
    assert file_type(q4) == "MOSTLY_Q4_K_M" and file_type(q5) == "MOSTLY_Q5_K_M"
    assert count_imatrix == ["bundled:wiki-calibration"]  # computed once for the two files
    quantizer_runs = [e.message for e in events if "llama-quantize" in getattr(e, "message", "")]
    assert len(quantizer_runs) == 2 and all("--imatrix" in line for line in quantizer_runs)  # both used it
    assert q5.stat().st_size > q4.stat().st_size
    assert [(e.quant, e.done) for e in events if isinstance(e, QueueItem)] == [
        ("Q4_K_M", False), ("Q4_K_M", True), ("Q5_K_M", False), ("Q5_K_M", True)]
    assert not leftovers(tmp_path) and not list(tmp_path.glob("*imatrix*"))  # the shared matrix was scratch
    # SmolLM2-Instruct's ChatML template becomes an Ollama TEMPLATE, its end-of-turn token the stop word
    modelfile = (tmp_path / "smollm-Q4_K_M.Modelfile").read_text()
    assert "FROM ./smollm-Q4_K_M.gguf" in modelfile
    assert ('{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n{{ if $last }}<|im_start|>assistant\n'
            in modelfile)
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    readme = (tmp_path / "README.md").read_text()
    assert ("Q4_K_M, Q5_K_M rounded by llama.cpp's `llama-quantize` from the app's F16 export, weighing rounding "
            "errors by an importance matrix computed once on bundled:wiki-calibration (4 chunks of 64 tokens)" in readme)
    assert f"| Q5_K_M | `smollm-Q5_K_M.gguf` | {q5.stat().st_size / 1e6:.1f} MB |" in readme
    assert {f["path"] for f in done["files"]} == {str(q4), str(q5)}


@needs_quantizer
def test_cancel_mid_queue_keeps_the_finished_file_and_nothing_of_the_next(tmp_path, result):
    out = tmp_path / "gguf"
    out.mkdir()
    job = iter_gguf_queue(result.folder, out / "tiny.gguf", ["Q4_K_M", "Q5_K_M"])
    started_second = False
    for event in job:
        if isinstance(event, QueueItem) and event.quant == "Q5_K_M" and not event.done:
            started_second = True
        if started_second and "llama-quantize" in getattr(event, "message", ""):
            break  # the second file is being quantized now
    job.close()  # what the app's Cancel and the CLI's Ctrl-C do
    assert started_second
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "tiny-Q4_K_M.Modelfile", "tiny-Q4_K_M.gguf"]
    assert file_type(out / "tiny-Q4_K_M.gguf") == "MOSTLY_Q4_K_M"
    assert "tiny-Q5_K_M" not in (out / "README.md").read_text()  # the card describes what is there


def test_modelfile_and_readme_card_say_what_the_result_and_files_are(tmp_path, result, tiny_tokenizer):
    out = tmp_path / "gguf"
    out.mkdir()
    # Q8_0 and F16 are written by our own exporter: no llama.cpp needed for the cards
    _, done = collect(iter_gguf_queue(result.folder, out / "tiny.gguf", "Q8_0,F16"))
    readme = (out / "README.md").read_text()
    report = result.report
    assert readme.startswith(f"<!-- {CARD_MARK}")
    assert f"`{report['source']}`" in readme and f"**{report['recipe']}**" in readme
    step = report["steps"][0]
    assert f"1. **magnitude_prune** ({step['family']}): {step['summary']}" in readme
    before, after = report["before"]["perplexity"]["perplexity"], report["after"]["perplexity"]["perplexity"]
    assert f"{before:.2f} before, {after:.2f} after" in readme
    assert "Then GGUF: Q8_0, F16 written by the app's own GGUF writer." in readme  # no llama.cpp involved
    for quant in ("Q8_0", "F16"):
        path = out / f"tiny-{quant}.gguf"
        assert read_gguf_facts(path).quant == quant
        assert f"| {quant} | `{path.name}` | {path.stat().st_size / 1e6:.1f} MB | not measured |" in readme
        assert f'llama-cli -m {path.name} -p "' in readme
        assert f"ollama create tiny-{quant.lower()} -f tiny-{quant}.Modelfile" in readme
        modelfile = (out / f"tiny-{quant}.Modelfile").read_text()
        assert f"FROM ./{path.name}\n" in modelfile
        # the tiny tokenizer has no chat template: no TEMPLATE, and the comment says why
        assert "TEMPLATE" not in modelfile.replace("# No TEMPLATE", "")
        assert "no chat template" in modelfile
        assert f'PARAMETER stop "{tiny_tokenizer.eos_token}"' in modelfile
    assert [f["quant"] for f in done["files"]] == ["Q8_0", "F16"]


def test_a_readme_the_app_did_not_write_is_never_replaced(tmp_path, result):
    out = tmp_path / "gguf"
    out.mkdir()
    (out / "README.md").write_text("my own notes\n")
    with pytest.raises(OutputError, match="not written by this app"):
        collect(iter_gguf_queue(result.folder, out / "tiny.gguf", "Q8_0"))
    assert (out / "README.md").read_text() == "my own notes\n"
    assert [p.name for p in out.iterdir()] == ["README.md"]  # refused before any work


def test_cli_takes_several_types_and_refuses_an_unknown_one_in_one_line(tmp_path, result, capsys):
    out = tmp_path / "gguf"
    out.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["export-gguf", str(result.folder), "-o", str(out / "m.gguf"), "--type", "Q8_0,Q4_K_X"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error:") and "'Q4_K_X'" in err and err.count("\n") == 1
    assert main(["-q", "export-gguf", str(result.folder), "-o", str(out / "m.gguf"), "--type", "q8_0,F16",
                 "--no-cards"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["m-F16.gguf", "m-Q8_0.gguf"]
    assert [file_type(out / n) for n in ("m-Q8_0.gguf", "m-F16.gguf")] == ["MOSTLY_Q8_0", "MOSTLY_F16"]


def test_parse_types_names_the_unknown_type():
    from core.engine.gguf_queue import parse_types

    assert parse_types(" q4_k_m, Q5_K_M ,Q4_K_M") == ["Q4_K_M", "Q5_K_M"]
    with pytest.raises(StudioError, match="'Q9'"):
        parse_types("Q4_K_M,Q9")



@pytest.mark.skipif(missing_reason("llama-perplexity") is not None, reason=str(missing_reason("llama-perplexity")))
def test_the_card_holds_the_perplexity_llama_cpp_measures_for_each_file(tmp_path, result, text_file, capsys):
    from core.io.llama_cpp_tools import perplexity

    out = tmp_path / "gguf"
    out.mkdir()
    assert main(["-q", "export-gguf", str(result.folder), "-o", str(out / "tiny.gguf"), "--type", "F16,Q8_0",
                 "--perplexity", "2", "--perplexity-context", "32"]) == 0
    printed, readme = capsys.readouterr().out, (out / "README.md").read_text()
    for quant in ("Q8_0",):  # the recipe's evaluation text is text_file: llama.cpp's own number on it
        path = out / f"tiny-{quant}.gguf"
        theirs = perplexity(path, text_file, 32, 2)["perplexity"]
        assert f"| {quant} | `{path.name}` | {path.stat().st_size / 1e6:.1f} MB | {theirs:.2f} |" in readme
        assert f"{path} " in printed and f"llama.cpp perplexity {theirs:.2f}" in printed
    assert f"2 chunks of 32 tokens of {text_file}" in readme
    assert "| F16 | `tiny-F16.gguf` |" in readme and "| not measured |" not in readme
