"""Our Wanda / SparseGPT against peers from PyPI (llm-compressor, torchao), side by side, in one run.

    bash bench/setup_prune_peers.sh            # once: .venv-prune-peers with llmcompressor + torchao
    .venv/bin/python bench/bench_prune_peers.py [--rows "Wanda 50%,SparseGPT 2:4"]

The bundled SmolLM2-135M is exported to a plain folder (core.io.saving.save_model) that the peers
read; every method gets the same calibration token windows (32 × 512 of bundled:wiki-calibration,
tokenized once here and handed to the peers as ids) and the same evaluation (40 × 512 of
bundled:wiki-evaluation through core.eval.perplexity.perplexity, on the peers' saved folders).  Each
method runs in its own child process; the peers run under .venv-prune-peers/bin/python, so this
file imports nothing outside the standard library at module level.  A peer's result is checked
for zeros before it is compared.  Wall time is the pruning call alone (calibration included).
Our 50% rows are also saved dense and in the sparse-bitmask format to report both byte counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # also in the peers' venv, which runs this file as its child

from bench.common import add_window_arguments, run_child  # noqa: E402  (standard library only: the peers' venv imports it too)

PEER_PYTHON = ROOT / ".venv-prune-peers" / "bin" / "python"
OURS = {"Wanda 50%": ("wanda_prune", {"sparsity": 0.5}), "Wanda 2:4": ("wanda_prune", {"pattern": "2:4"}),
        "SparseGPT 50%": ("sparsegpt_prune", {"sparsity": 0.5}),
        "SparseGPT 2:4": ("sparsegpt_prune", {"pattern": "2:4"})}
PEERS = {"Wanda 50%": ["llmcompressor", "torchao"], "Wanda 2:4": ["llmcompressor", "torchao"],
         "SparseGPT 50%": ["llmcompressor"], "SparseGPT 2:4": ["llmcompressor"]}
LINEAR_TARGETS = ["re:.*self_attn\\.(q|k|v|o)_proj$", "re:.*mlp\\.(gate|up|down)_proj$"]  # a LIST


# ------------------------------------------------------------------ peer side (.venv-prune-peers)
def run_peer(peer: str, method: str, model_dir: str, ids_file: str, out_dir: str) -> dict:
    """Prune the plain folder with a peer, save a plain folder, return the wall time."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.load(ids_file)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").eval()
    two_four = method.endswith("2:4")
    started = time.perf_counter()
    if peer == "llmcompressor":
        from llmcompressor import oneshot
        from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

        modifier_cls = WandaPruningModifier if method.startswith("Wanda") else SparseGPTModifier
        modifier = modifier_cls(sparsity=0.5, mask_structure="2:4" if two_four else "0:0",
                                targets=list(LINEAR_TARGETS), ignore=["lm_head"])
        loader = torch.utils.data.DataLoader(
            [{"input_ids": row, "attention_mask": torch.ones_like(row)} for row in ids], batch_size=1)
        oneshot(model=model, dataset=loader, recipe=[modifier], num_calibration_samples=len(ids),
                max_seq_length=ids.shape[1], shuffle_calibration_samples=False)
    elif peer == "torchao":
        from torchao.sparsity import WandaSparsifier

        sparsifier = WandaSparsifier(sparsity_level=0.5, semi_structured_block_size=4 if two_four else None)
        config = [{"tensor_fqn": f"{name}.weight"} for name, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and name != "lm_head"]
        sparsifier.prepare(model, config)
        with torch.no_grad():
            for row in ids:
                model(row.unsqueeze(0), use_cache=False)
        sparsifier.step()
        sparsifier.squash_mask()
    else:
        raise ValueError(f"unknown peer {peer}")
    prune_s = time.perf_counter() - started
    _save_plain(model, model_dir, Path(out_dir))
    return {"prune_s": prune_s}


def _save_plain(model, source_dir: str, out: Path) -> None:
    """Weights (tied tensors once) + config without any quantization_config + the tokenizer files."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    seen, state = set(), {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            state[name] = tensor.detach().contiguous()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((Path(source_dir) / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for path in Path(source_dir).iterdir():
        if path.name not in ("config.json", "model.safetensors") and path.suffix in (".json", ".txt", ".model"):
            shutil.copy(path, out / path.name)


# ------------------------------------------------------------------ our side (.venv)
def linear_sparsity(model) -> float:
    """Share of exact zeros over the Linear weights we and the peers target (lm_head excluded)."""
    import torch

    zeros = total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            zeros += module.weight.numel() - int(torch.count_nonzero(module.weight))
            total += module.weight.numel()
    return zeros / total if total else 0.0


def _perplexity(model, tokenizer, args) -> tuple[float, float]:
    from core.data.texts import load_texts, token_windows
    from core.eval.perplexity import perplexity

    windows = token_windows(load_texts("bundled:wiki-evaluation"), tokenizer, args.sequence_length, args.windows)
    started = time.perf_counter()
    value = perplexity(model, windows).perplexity
    return value, time.perf_counter() - started


def run_ours(method: str, args) -> dict:
    """Our technique on the bundled model; 50% rows also saved dense and sparse-bitmask."""
    import torch

    from core.engine.params import config_from_dict
    from core.engine.recipe import DataSpec, Recipe
    from core.engine.registry import get_technique
    from core.engine.runner import RunContext
    from core.events import drain
    from core.io.saving import save_model
    from core.models.loading import load_model
    from core.models.model_info import folder_weight_bytes
    from core.techniques.prune.sparse_format import mark_sparse, sparse_bytes_estimate

    technique, params = OURS[method]
    loaded = load_model("bundled:smollm2-135m")
    model, tokenizer = loaded.model, loaded.tokenizer
    info = get_technique(technique)
    ctx = RunContext(Recipe(data=DataSpec(sequence_length=args.sequence_length,
                                          calibration_windows=args.calibration_windows)), tokenizer, "cpu")
    started = time.perf_counter()
    drain(info.handler(model, config_from_dict(info.config_cls, params), ctx))
    row = {"prune_s": time.perf_counter() - started, "sparsity": linear_sparsity(model)}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        dense_dir = save_model(model, tokenizer, Path(tmp) / "dense")
        mark_sparse(model)
        sparse_dir = save_model(model, tokenizer, Path(tmp) / "sparse")
        row["dense_bytes"], row["sparse_bytes"] = folder_weight_bytes(dense_dir), folder_weight_bytes(sparse_dir)
        row["sparse_estimate"] = sparse_bytes_estimate(model)["sparse_bytes"]
        probe = ctx.calibration_windows()[:1]
        reloaded = load_model(str(sparse_dir)).model
        with torch.no_grad():
            row["reload_identical"] = bool(torch.equal(model(probe).logits, reloaded(probe).logits))
        del reloaded
    row["perplexity"], row["eval_s"] = _perplexity(model, tokenizer, args)
    return row


def evaluate_folder(folder: str, args) -> dict:
    from core.models.loading import load_model

    loaded = load_model(folder)
    row = {"sparsity": linear_sparsity(loaded.model)}
    row["perplexity"], row["eval_s"] = _perplexity(loaded.model, loaded.tokenizer, args)
    return row


# ------------------------------------------------------------------ orchestration
def _child(python: Path, mode: list[str], args, timeout: float) -> dict:
    """Run this file in a child process (``python``: ours or a peer's venv); return its JSON, or {"error": why}."""
    return run_child(__file__, [*mode, "--workdir", args.workdir, "--calibration-windows", str(args.calibration_windows),
                                "--windows", str(args.windows), "--sequence-length", str(args.sequence_length)],
                     python=python, timeout=timeout, workdir=args.workdir, quiet=True)


def prepare(args) -> tuple[str, str]:
    """Export the bundled model to a plain folder and the calibration windows to a token-id file."""
    import torch

    from core.data.texts import load_texts, token_windows
    from core.io.saving import save_model
    from core.models.loading import load_model

    loaded = load_model("bundled:smollm2-135m")
    folder = Path(args.workdir) / "smollm2-135m-plain"
    if not (folder / "config.json").is_file():
        save_model(loaded.model, loaded.tokenizer, folder)
    ids = token_windows(load_texts("bundled:wiki-calibration"), loaded.tokenizer, args.sequence_length,
                        args.calibration_windows)
    ids_file = Path(args.workdir) / "calibration_ids.pt"
    torch.save(ids.to(torch.long).contiguous(), ids_file)
    return str(folder), str(ids_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_arguments(parser, calibration=32, windows=40, sequence_length=512)
    parser.add_argument("--rows", default=",".join(OURS))
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "prune-peers"))
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per child process")
    for hidden in ("--ours", "--peer", "--method", "--model", "--ids", "--out", "--evaluate", "--json-out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.json_out:
        sys.path.insert(0, str(ROOT))
        try:
            if args.peer:
                result = run_peer(args.peer, args.method, args.model, args.ids, args.out)
            elif args.ours:
                result = run_ours(args.ours, args)
            else:
                result = evaluate_folder(args.evaluate, args)
        except Exception:
            traceback.print_exc()
            raise SystemExit(1) from None
        Path(args.json_out).write_text(json.dumps(result))
        return
    report(args)


def report(args) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.common import print_table, write_results

    model_dir, ids_file = prepare(args)
    rows = []
    for method in [m.strip() for m in args.rows.split(",")]:
        ours = _child(Path(sys.executable), ["--ours", method], args, args.timeout)
        print(f"ours {method}: {ours}", flush=True)
        for peer in PEERS[method]:
            row = {"method": method, "peer": peer, "ours_ppl": ours.get("perplexity"),
                   "ours_s": ours.get("prune_s"), "ours_sparsity": ours.get("sparsity")}
            out = Path(args.workdir) / f"{peer}-{method.replace(' ', '_').replace(':', '-').replace('%', '')}"
            if not PEER_PYTHON.exists():
                result = {"error": "not installed: run bash bench/setup_prune_peers.sh"}
            else:
                result = _child(PEER_PYTHON, ["--peer", peer, "--method", method, "--model", model_dir,
                                              "--ids", ids_file, "--out", str(out)], args, args.timeout)
            if "error" not in result:
                result.update(_child(Path(sys.executable), ["--evaluate", str(out)], args, args.timeout))
            shutil.rmtree(out, ignore_errors=True)
            row.update({"peer_ppl": result.get("perplexity"), "peer_s": result.get("prune_s"),
                        "peer_sparsity": result.get("sparsity"), "error": result.get("error")})
            if row["peer_sparsity"] is not None and row["peer_sparsity"] < 0.45:
                row["error"] = f"peer result is not sparse ({row['peer_sparsity']:.1%} zeros): not compared"
            elif row["peer_ppl"] and row["ours_ppl"]:
                row["ppl_ratio"] = row["ours_ppl"] / row["peer_ppl"]
                row["time_ratio"] = row["ours_s"] / row["peer_s"]
            rows.append(row)
            print(f"  {peer}: {result}", flush=True)
        rows[-1]["ours_detail"] = ours
    print()
    print_table(rows, [("method", "method", ""), ("peer", "peer", ""), ("ours_ppl", "ours ppl", ".2f"),
                       ("peer_ppl", "peer ppl", ".2f"), ("ppl_ratio", "ppl ours/peer", ".3f"),
                       ("ours_s", "ours s", ".1f"), ("peer_s", "peer s", ".1f"),
                       ("time_ratio", "time ours/peer", ".2f"), ("ours_sparsity", "ours zeros", ".3f"),
                       ("peer_sparsity", "peer zeros", ".3f")])
    for row in rows:
        if row.get("error"):
            print(f"{row['method']} / {row['peer']}: {row['error']}")
    print()
    print_table([{"method": r["method"], **r["ours_detail"]} for r in rows if "ours_detail" in r],
                [("method", "ours", ""), ("dense_bytes", "dense bytes", ",d"), ("sparse_bytes", "sparse bytes", ",d"),
                 ("sparse_estimate", "estimate", ",d"), ("reload_identical", "reload identical", "")])
    settings = {k: v for k, v in vars(args).items() if k in ("calibration_windows", "windows", "sequence_length")}
    settings.update(model="bundled:smollm2-135m", calibration="bundled:wiki-calibration",
                    evaluation="bundled:wiki-evaluation", peers_python=str(PEER_PYTHON))
    print(f"\nwrote {write_results('prune_peers', rows, settings)}")


if __name__ == "__main__":
    main()
