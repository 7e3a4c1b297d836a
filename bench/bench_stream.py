"""Streamed runs (``model.stream: true``): memory that does not grow with depth, and a model bigger than allowed.

    .venv/bin/python bench/bench_stream.py [--hidden 384] [--layers 8 16 32] [--big-layers 24 --big-hidden 768 --cap-mb 550]

Random-weight Llama-shaped models of one width with 8, 16 and 32 decoder blocks are saved as safetensors
folders in a temporary directory (with a small BPE tokenizer trained here on the bundled calibration
text).  On each, three jobs run streamed, each in its own fresh process: Wanda 50% and GPTQ 4-bit g64
(the recipe through the runner, perplexity off, so the step and the block-by-block writing are what is
timed) and the perplexity evaluation alone; for contrast, Wanda in memory (the same recipe, not streamed).  Each child samples its anonymous resident memory
(``RssAnon`` of /proc/self/status, every 5 ms) and reports the peak, its ``VmHWM`` (which also counts
the pages of the memory-mapped weight files), the wall time of the job (imports excluded) and of its
block loop alone (first block read to last block dropped: the part that grows with depth).

Then a wider model whose weight files are larger than the memory the run is allowed: the child runs
in a cgroup (v1 ``memory.limit_in_bytes``, or v2 ``memory.max``) made here, so the kernel kills it if
it needs more.  The whole recipe (perplexity before, Wanda, perplexity after, saving) runs streamed
under that cap, and the same recipe in memory under the same cap for contrast.  Needs root for the
cgroup; without one the row says so.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import print_table, provenance, run_child, write_results  # noqa: E402

JOBS = {  # job -> (technique, params); "eval" is the streamed perplexity alone, "inmemory" Wanda not streamed
    "wanda": ("wanda_prune", {"sparsity": 0.5}),
    "gptq": ("gptq_quantize", {"bits": 4, "group_size": 64, "quantize_embedding": False}),
    "eval": (None, None),
    "inmemory": ("wanda_prune", {"sparsity": 0.5}),
}
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")


# ------------------------------------------------------------------------------------------- child
class AnonPeak:
    """Samples RssAnon in a thread; ``peak`` in bytes."""

    def __init__(self, every: float = 0.005):
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def _recipe(path: Path, model: Path, technique: str, params: dict, args, *, stream: bool, perplexity: bool) -> Path:
    recipe = {"version": 1, "name": "bench stream", "model": {"source": str(model), "stream": stream},
              "data": {"calibration": "bundled:wiki-calibration", "evaluation": "bundled:wiki-evaluation",
                       "sequence_length": args.sequence_length, "calibration_windows": args.calibration_windows},
              "evaluation": {"perplexity": perplexity, "max_windows": args.windows, "kl_to_teacher": False},
              "steps": [{"technique": technique, "params": params}], "output": {"dtype": "float32"}}
    path.write_text(yaml.safe_dump(recipe))
    return path


def child(args) -> dict:
    """One job in this fresh process: returns its peak memory and time."""
    import torch

    from core.data.perplexity_windows import perplexity_windows
    from core.data.texts import load_texts
    from core.engine.calibration import find_blocks
    from core.engine.recipe import load_recipe
    from core.engine.runner import run_recipe
    from core.engine.streamed_eval import iter_streamed_perplexity
    from core.events import drain
    from core.models.loading import _parse_tokenizer_or_explain
    from core.models.streaming import block_stream, open_streamed

    torch.set_num_threads(1)  # a shared 2-core machine: one thread keeps the timings steady
    # the block loop's own time: from the first block read to the last block dropped (every pass)
    import core.models.streaming as streaming

    onload, offload, loop = streaming.BlockStream.onload, streaming.BlockStream.offload, {"seconds": 0.0}

    def timed_onload(self, name, block, device):
        loop.setdefault("start", time.perf_counter())
        onload(self, name, block, device)

    def timed_offload(self, name, block):
        offload(self, name, block)
        loop["end"] = time.perf_counter()

    streaming.BlockStream.onload, streaming.BlockStream.offload = timed_onload, timed_offload
    model_dir, work = Path(args.model), Path(args.work)
    baseline = AnonPeak.now()
    result: dict = {"baseline_anon_mb": baseline / 1e6}
    with AnonPeak() as peak:
        started = time.perf_counter()
        if args.job == "eval":
            tokenizer = _parse_tokenizer_or_explain(model_dir, False)
            model = open_streamed(model_dir, lambda m: find_blocks(m)[0])
            windows = perplexity_windows(load_texts("bundled:wiki-evaluation"), tokenizer, args.sequence_length,
                                         args.windows, "transformers")
            ppl = drain(iter_streamed_perplexity(model, windows))
            result.update(perplexity=ppl.perplexity, resident_parameter_mb=block_stream(model).peak_resident_bytes / 1e6)
        else:
            technique, params = JOBS[args.job]
            stream = args.job != "inmemory"
            recipe = load_recipe(_recipe(work / "recipe.yaml", model_dir, technique, params, args, stream=stream,
                                         perplexity=args.full))
            report = drain(run_recipe(recipe, work / "out"))
            result["perplexity_after"] = report["after"].get("perplexity", {}).get("perplexity")
            result["perplexity_before"] = report["before"].get("perplexity", {}).get("perplexity")
            if "peak_resident_parameter_bytes" in report:
                result["resident_parameter_mb"] = report["peak_resident_parameter_bytes"] / 1e6
        result["seconds"] = time.perf_counter() - started
    if "start" in loop:
        result["block_seconds"] = loop["end"] - loop["start"]
    result["peak_anon_mb"] = peak.peak / 1e6
    result["vm_hwm_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    return result


# ------------------------------------------------------------------------------------------- parent
def make_tokenizer(folder: Path, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from core.data.texts import load_texts

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(load_texts("bundled:wiki-calibration"), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


def make_model(folder: Path, layers: int, hidden: int, vocab: int, tokenizer) -> int:
    """A random Llama of ``layers`` blocks saved as safetensors in ``folder``; returns its weight bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(layers)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 64 * 64,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                         max_position_embeddings=1024, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder, max_shard_size="200MB")
    tokenizer.save_pretrained(folder)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


class Cgroup:
    """A memory cgroup made for one child (v1 or v2); ``python`` is a wrapper that enters it and runs Python."""

    def __init__(self, work: Path, limit_bytes: int):
        name = f"bench-stream-{os.getpid()}"
        if (CGROUP_V1 / "memory.limit_in_bytes").is_file():
            self.path, limit_file = CGROUP_V1 / name, "memory.limit_in_bytes"
        else:
            self.path, limit_file = CGROUP_V2 / name, "memory.max"
        self.path.mkdir()
        (self.path / limit_file).write_text(str(limit_bytes))
        self.python = work / "capped-python.sh"
        self.python.write_text(f"#!/bin/sh\necho $$ > {self.path}/cgroup.procs\nexec {sys.executable} \"$@\"\n")
        self.python.chmod(0o755)

    def close(self) -> None:
        self.path.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--big-hidden", type=int, default=768)
    parser.add_argument("--big-layers", type=int, default=24)
    parser.add_argument("--cap-mb", type=int, default=550, help="memory allowed to the larger-than-allowed run")
    parser.add_argument("--calibration-windows", type=int, default=8)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--full", action="store_true", help="(child) measure perplexity before and after too")
    parser.add_argument("--job", help="(child) which job to run")
    parser.add_argument("--model", help="(child) the model folder")
    parser.add_argument("--work", help="(child) a work folder")
    parser.add_argument("--json-out", help="(child) where to write the result")
    args = parser.parse_args(argv)
    if args.job:
        import json

        Path(args.json_out).write_text(json.dumps(child(args)))
        return 0

    started = provenance()
    rows = []
    common = ["--calibration-windows", str(args.calibration_windows), "--windows", str(args.windows),
              "--sequence-length", str(args.sequence_length)]
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as temp:
        temp = Path(temp)
        tokenizer = make_tokenizer(temp / "tokenizer", args.vocab)
        for layers in args.layers:
            folder = temp / f"llama-{layers}"
            weight_bytes = make_model(folder, layers, args.hidden, args.vocab, tokenizer)
            for job in JOBS:
                work = temp / f"work-{layers}-{job}"
                work.mkdir()
                row = run_child(__file__, ["--job", job, "--model", str(folder), "--work", str(work), *common],
                                quiet=True)
                row.update(model=f"{layers} layers", layers=layers, hidden=args.hidden, job=job,
                           weight_mb=weight_bytes / 1e6)
                rows.append(row)
                print(row, flush=True)
                shutil.rmtree(work)
            shutil.rmtree(folder)
        folder = temp / "llama-big"
        weight_bytes = make_model(folder, args.big_layers, args.big_hidden, args.vocab, tokenizer)
        for job in ("wanda", "inmemory"):
            work = temp / f"work-big-{job}"
            work.mkdir()
            try:
                cgroup = Cgroup(temp, args.cap_mb * 10**6)
            except OSError as exc:
                rows.append({"model": "larger than allowed", "job": job, "error": f"no memory cgroup here: {exc}"})
                continue
            try:
                row = run_child(__file__, ["--job", job, "--model", str(folder), "--work", str(work), "--full",
                                           *common], python=cgroup.python, quiet=True)
            finally:
                cgroup.close()
            row.update(model="larger than allowed", layers=args.big_layers, hidden=args.big_hidden, job=job,
                       weight_mb=weight_bytes / 1e6, cap_mb=args.cap_mb, completed="error" not in row)
            rows.append(row)
            print(row, flush=True)
            shutil.rmtree(work)
    settings = {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab, "big_hidden": args.big_hidden,
                "big_layers": args.big_layers, "cap_mb": args.cap_mb, "calibration_windows": args.calibration_windows,
                "windows": args.windows, "sequence_length": args.sequence_length, "threads": 1}
    path = write_results("stream", rows, settings, started)
    print_table(rows, [("model", "model", "s"), ("job", "job", "s"), ("weight_mb", "weights MB", ".0f"),
                       ("peak_anon_mb", "peak anon MB", ".0f"), ("seconds", "s", ".1f")])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
