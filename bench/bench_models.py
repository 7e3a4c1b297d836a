"""Every technique on two model families (issue 20): the bundled SmolLM2-135M and a random-weight Qwen2.

    .venv/bin/python bench/bench_models.py [--windows 4] [--sequence-length 256] [--calibration-windows 4]
                                           [--models qwen2,smollm2] [--resume]

The result is written after every row (``settings.complete`` is false until the last); ``--resume`` keeps
the rows already written and measures the rest.

Models:

* ``smollm2``: the bundled SmolLM2-135M (Llama architecture; Q4_1 GGUF source, 49,152-token vocabulary,
  tied head; the embedding is 21% of its weights);
* ``qwen2``: a Qwen2-architecture model built here from a ``transformers`` config with random weights
  (seed 0): 4 layers of width 256 and SmolLM2's 49,152-token tokenizer, tied head, saved as bfloat16
  safetensors — like the issue's model, most of its weights (80%) are the embedding.  Quality means
  nothing here (its perplexity is about the vocabulary size); sizes, shapes and plumbing do.

Rows, each through the runner with the registered step (``run_recipe``), except the original (loaded and
measured) and GGUF export (``core.io.gguf_export.export_gguf`` of the original, Q4_0, read back with our
GGUF loader): GPTQ 4-bit g64, RTN 4-bit g64 with the token embedding quantized at 8 bits (the default),
at 4 bits and kept, bitsandbytes NF4 (which cannot quantize the embedding), Wanda 50%, GGUF Q4_0 with
token_embd quantized (Q8_0 for a tied head, as llama-quantize writes it) and kept in F16, and a group size
that does not divide the model's widths (a shape error the pre-flight check must report before any weights
load).

Every saved result is reloaded with our loader and scored on the same text (four bundled Wikipedia
articles as one plain-text document) on two conventions: transformers' (non-overlapping windows of L
tokens, every token but the first predicted) and llama.cpp's (chunks of L, BOS first where the tokenizer
adds one, second half scored).  Each is checked against an independent computation written from that
tool's published method (``model(window, labels=window).loss``; llama-perplexity's chunk scoring), and
the runner's in-memory number against the reloaded one.  Sizes: bytes of the saved weight files (the
GGUF file for GGUF rows) against the source's file, and against the size the app compares a result with
(its 16-bit size for a floating-point result of a compact GGUF source, :mod:`core.eval.size_baseline`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, print_table, provenance, write_results  # noqa: E402

BUNDLED = "bundled:smollm2-135m"
QWEN2 = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 2048, "tie_word_embeddings": True}
BAD_GROUP = {"smollm2": 128, "qwen2": 96}  # 576 (SmolLM2) is not a multiple of 128, 256 (the Qwen2) not of 96
STEPS = [  # row name -> (technique, params); GPTQ last, the slowest (12 minutes of SmolLM2 on a busy 2-core machine)
    ("RTN 4-bit g64", "rtn_quantize", {"bits": 4, "group_size": 64}),
    ("RTN 4-bit g64, embedding 4-bit", "rtn_quantize", {"bits": 4, "group_size": 64, "embedding_bits": 4}),
    ("RTN 4-bit g64, embedding kept", "rtn_quantize", {"bits": 4, "group_size": 64, "quantize_embedding": False}),
    ("NF4 (bitsandbytes)", "bnb_quantize", {"mode": "nf4"}),
    ("Wanda 50%", "wanda_prune", {"sparsity": 0.5}),
    ("GPTQ 4-bit g64", "gptq_quantize", {"bits": 4, "group_size": 64}),
]
# Quantized with the token embedding quantized too: each must be smaller than the source's own file.  The rows
# that keep the embedding (NF4, whose bitsandbytes cannot quantize it, and the "kept" comparisons) are measured
# and shown, and may be larger than a compact GGUF source: that is what the option is for.
EMBEDDING_QUANTIZED = {"GPTQ 4-bit g64", "RTN 4-bit g64", "RTN 4-bit g64, embedding 4-bit", "GGUF Q4_0"}


def build_qwen2(folder: Path, tokenizer) -> Path:
    """The random-weight Qwen2 (seed 0) with ``tokenizer``, saved as bfloat16 safetensors."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **QWEN2)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------- perplexity
def _reference_transformers(model, tokenizer, text: str, length: int, windows: int) -> float:
    """transformers' perplexity guide: tokenizer(text), non-overlapping windows, model(labels=window).loss."""
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    total = 0.0
    with torch.inference_mode():
        for i in range(windows):
            window = ids[i * length:(i + 1) * length][None]
            total += float(model(window, labels=window).loss) * (length - 1)
    return math.exp(total / (windows * (length - 1)))


def _reference_llama_cpp(model, tokenizer, text: str, length: int, chunks: int) -> float:
    """llama-perplexity: chunks of L tokens, BOS first where the tokenizer adds one, the second half scored."""
    import torch
    import torch.nn.functional as F

    tokens = tokenizer(text)["input_ids"]
    adds_bos = tokenizer.bos_token_id is not None and tokens[:1] == [tokenizer.bos_token_id]
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(chunks):
            batch = list(tokens[i * length:(i + 1) * length])
            if adds_bos:
                batch[0] = tokenizer.bos_token_id
            logprobs = F.log_softmax(model(torch.tensor([batch])).logits[0].float(), dim=-1)
            for position in range(length // 2, length - 1):
                total -= float(logprobs[position, batch[position + 1]])
                count += 1
    return math.exp(total / count)


def score(model, tokenizer, text_file: Path, length: int, windows: int) -> dict[str, float]:
    """Perplexity on both conventions (the app's code) and each one's independent reference."""
    from core.data.perplexity_windows import perplexity_windows
    from core.data.texts import load_texts
    from core.eval.perplexity import perplexity

    texts, text = load_texts(str(text_file)), text_file.read_text()
    ours = {name: perplexity(model, perplexity_windows(texts, tokenizer, length, windows, name)).perplexity
            for name in ("transformers", "llama.cpp")}
    reference = {"transformers": _reference_transformers(model, tokenizer, text, length, windows),
                 "llama.cpp": _reference_llama_cpp(model, tokenizer, text, length, windows)}
    agreement = max(abs(ours[n] / reference[n] - 1) for n in ours)
    return {"ppl_transformers": ours["transformers"], "ppl_llama_cpp": ours["llama.cpp"],
            "ref_transformers": reference["transformers"], "ref_llama_cpp": reference["llama.cpp"],
            "reference_gap": agreement}


# ---------------------------------------------------------------------------------------------- rows
def _recipe(source: str, text_file: Path, technique: str, params: dict, args) -> Any:
    from core.engine.recipe import Recipe

    return Recipe.from_dict({
        "name": f"bench_models {technique}", "model": {"source": source},
        "data": {"calibration": "bundled:wiki-calibration", "evaluation": str(text_file),
                 "sequence_length": args.sequence_length, "calibration_windows": args.calibration_windows},
        "evaluation": {"max_windows": args.windows, "kl_to_teacher": False},
        "steps": [{"technique": technique, "params": params}]})


def in_float32(model):
    """The reloaded model computing in float32, as the runner computed when it measured the result: a folder
    saved as bfloat16 loads as bfloat16, and bfloat16 arithmetic alone moves perplexity by 0.1-0.6% on SmolLM2.
    The weights are not changed (bfloat16 values are exact in float32).  bitsandbytes layers keep their packed
    weights and compute in float32 (their ``compute_dtype``)."""
    import torch

    packed = [m for m in model.modules() if type(m).__module__.startswith("bitsandbytes")]
    if not packed:
        return model.float()
    inside = {id(t) for m in packed for t in m.parameters(recurse=False)}
    for module in packed:
        module.compute_dtype = torch.float32
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in inside and tensor.is_floating_point():
            tensor.data = tensor.data.float()
    return model


def step_row(name: str, technique: str, params: dict, source: str, text_file: Path, out: Path, args) -> dict:
    """One registered step through the runner, then the saved folder reloaded and scored."""
    from core.engine.runner import run_recipe
    from core.events import drain
    from core.models.loading import load_model

    started = time.perf_counter()
    report = drain(run_recipe(_recipe(source, text_file, technique, params, args), out))
    wall = time.perf_counter() - started
    step = report["steps"][0]
    loaded = load_model(str(out))
    row = {"row": name, "technique": technique, "params": params, "wall_s": wall,
           "step_s": step.get("seconds"), "disk_bytes": report["after"]["bytes_on_disk"],
           "in_memory_ppl": report["after"]["perplexity"]["perplexity"],
           "embedding_quantized": bool(step["metrics"].get("embedding_quantized", 0.0)),
           "summary": step.get("summary", ""), **score(in_float32(loaded.model), loaded.tokenizer, text_file,
                                                        args.sequence_length, args.windows)}
    row["reload_gap"] = abs(row["ppl_transformers"] / row["in_memory_ppl"] - 1)
    return row


def gguf_rows(model, tokenizer, folder: Path, text_file: Path, args) -> list[dict]:
    """GGUF Q4_0 of the original, token_embd quantized (llama.cpp's default) and kept in F16."""
    from core.io.gguf_export import export_gguf, read_gguf_summary
    from core.models.loading import load_model

    rows = []
    for name, on in (("GGUF Q4_0", True), ("GGUF Q4_0, embedding kept (F16)", False)):
        path = folder / f"{'on' if on else 'off'}.gguf"
        started = time.perf_counter()
        written = export_gguf(model, tokenizer, path, "Q4_0", pre="smollm", quantize_embedding=on)
        wall = time.perf_counter() - started
        reloaded = load_model(str(path))
        table_type = read_gguf_summary(path)["tensors"]["token_embd.weight"]["type"]
        rows.append({"row": name, "technique": "gguf_export", "params": {"quant": "Q4_0", "quantize_embedding": on},
                     "wall_s": wall, "disk_bytes": written["bytes"], "in_memory_ppl": None,
                     "embedding_quantized": table_type != "F16", "embedding_type": table_type,
                     **score(reloaded.model, reloaded.tokenizer, text_file, args.sequence_length, args.windows)})
    return rows


def shape_error_row(source: str, group: int, text_file: Path, out: Path, args) -> dict:
    """GPTQ with a group size the widths do not divide: the error, how soon, and which stages ran first."""
    from core.engine.runner import run_recipe
    from core.errors import RecipeError
    from core.events import StageStarted

    started = time.perf_counter()
    stages, message = [], None
    job = run_recipe(_recipe(source, text_file, "gptq_quantize", {"bits": 4, "group_size": group}, args), out)
    try:
        for event in job:
            if isinstance(event, StageStarted):
                stages.append(event.stage)
    except RecipeError as exc:
        message = str(exc)
    return {"row": f"GPTQ group size {group} (shape error)", "technique": "gptq_quantize",
            "params": {"bits": 4, "group_size": group}, "error": message, "error_after_s": time.perf_counter() - started,
            "stages_before_error": stages, "before_loading": message is not None and "load" not in stages,
            "output_written": out.exists()}


def run_model(key: str, source: str, folder: Path, text_file: Path, args, done: set, emit) -> None:
    """The shape error, the original, GGUF export and every step on one model; ``emit(row)`` as each is measured
    (rows whose (model, row) is in ``done`` were measured by an earlier, interrupted run and are skipped)."""
    from core.eval.size_baseline import original_size
    from core.models.loading import load_model
    from core.models.model_info import inspect_model

    loaded = load_model(source)
    summary = inspect_model(loaded.model, on_disk=loaded.source_path)
    source_bytes = loaded.source_bytes
    baseline = original_size({"bytes_on_disk": source_bytes, "bytes_as_16bit": summary.bytes_as_16bit,
                              "stored_format": summary.stored_format, "stored_bits": summary.stored_bits})
    embedding = loaded.model.get_input_embeddings().weight.numel()
    info = {"model": key, "source": source if not source.startswith("/") else "random Qwen2 (built here)",
            "architecture": loaded.model.config.model_type, "parameters": summary.parameters,
            "embedding_parameters": embedding, "embedding_share": embedding / summary.parameters,
            "source_bytes": source_bytes, "bytes_as_16bit": summary.bytes_as_16bit}

    def finish(row: dict) -> None:
        row.update(info)
        if "disk_bytes" in row:
            compared = baseline.compared(result_is_gguf=row["technique"] == "gguf_export")
            row["compared_bytes"] = compared
            row["smaller_than_source_file"] = row["disk_bytes"] < source_bytes
            row["smaller_than_compared"] = row["disk_bytes"] < compared
        print(f"[{key}] {row['row']} measured", flush=True)
        emit(row)

    shape_name = f"GPTQ group size {BAD_GROUP[key]} (shape error)"
    if (key, shape_name) not in done:
        finish(shape_error_row(source, BAD_GROUP[key], text_file, folder / "shape-error", args))
    if (key, "original") not in done:
        started = time.perf_counter()
        row = {"row": "original", "technique": None, "disk_bytes": source_bytes, "in_memory_ppl": None,
               **score(loaded.model, loaded.tokenizer, text_file, args.sequence_length, args.windows)}
        finish({**row, "wall_s": time.perf_counter() - started})
    if not {(key, "GGUF Q4_0"), (key, "GGUF Q4_0, embedding kept (F16)")} <= done:
        for row in gguf_rows(loaded.model, loaded.tokenizer, folder, text_file, args):
            finish(row)
    del loaded
    for name, technique, params in STEPS:
        if (key, name) not in done:
            print(f"[{key}] {name} …", flush=True)
            finish(step_row(name, technique, params, source, text_file, folder / name.replace(" ", "_"), args))


def checks(rows: list[dict]) -> list[str]:
    """What the issue asks, checked on the rows: every failure as a sentence (empty: all hold)."""
    problems = []
    for row in rows:
        where = f"{row['model']}: {row['row']}"
        if "reference_gap" in row and row["reference_gap"] > 1e-3:
            problems.append(f"{where}: perplexity differs from the independent computation by {row['reference_gap']:.1e}")
        if row.get("reload_gap") is not None and row["reload_gap"] > 1e-4:
            problems.append(f"{where}: reloaded perplexity differs from the in-memory one by {row['reload_gap']:.1e}")
        if row["row"] in EMBEDDING_QUANTIZED and not (row["smaller_than_source_file"] and row["embedding_quantized"]):
            problems.append(f"{where}: not smaller than the source file ({row['disk_bytes']:,} B against "
                            f"{row['source_bytes']:,} B), or its embedding was not quantized")
        if "error" in row and not (row["error"] and row["before_loading"] and not row["output_written"]):
            problems.append(f"{where}: the shape error was not reported before loading ({row['stages_before_error']})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="qwen2,smollm2")
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=256)
    parser.add_argument("--calibration-windows", type=int, default=4)
    parser.add_argument("--name", default="models")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows bench/results/<name>.json already holds (same settings) and measure the rest")
    args = parser.parse_args(argv)
    started_at = provenance()

    from core.data.texts import load_texts
    from core.models.loading import load_model

    settings = {"windows": args.windows, "sequence_length": args.sequence_length,
                "calibration_windows": args.calibration_windows, "models": args.models, "qwen2": QWEN2,
                "evaluation": "bundled:wiki-evaluation, first 4 articles as one document",
                "calibration": "bundled:wiki-calibration"}
    rows: list[dict] = []
    previous = RESULTS / f"{args.name}.json"
    if args.resume and previous.is_file():  # rows an interrupted run measured with the same settings
        old = json.loads(previous.read_text())
        if {k: old["settings"].get(k) for k in settings} == settings:
            rows = old["rows"]
            started_at.update(commit=old.get("commit", started_at["commit"]), dirty=old.get("dirty", False))
    done = {(r["model"], r["row"]) for r in rows}

    def emit(row: dict) -> None:
        rows.append(row)  # written after every row, so a long run interrupted keeps what it measured
        write_results(args.name, rows, {**settings, "complete": False}, started_at)

    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        tmp = Path(tmp)
        text_file = tmp / "articles.txt"  # four articles as one plain-text document
        text_file.write_text("\n\n".join(load_texts("bundled:wiki-evaluation")[:4]) + "\n", encoding="utf-8")
        for key in args.models.split(","):
            folder = tmp / key
            folder.mkdir()
            if key == "smollm2":
                source = BUNDLED
            else:
                source = str(build_qwen2(tmp / "qwen2-source", load_model(BUNDLED).tokenizer))
            run_model(key, source, folder, text_file, args, done, emit)
    problems = checks(rows)
    print_table([{**r, "mb": r.get("disk_bytes", 0) / 1e6 if r.get("disk_bytes") else None} for r in rows],
                [("model", "model", ""), ("row", "row", ""), ("mb", "MB", ".1f"),
                 ("ppl_transformers", "ppl (transformers)", ".2f"), ("ppl_llama_cpp", "ppl (llama.cpp)", ".2f"),
                 ("reference_gap", "vs reference", ".1e"), ("error", "error", "")])
    path = write_results(args.name, rows, {**settings, "complete": True, "problems": problems}, started_at)
    print(f"wrote {path}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
