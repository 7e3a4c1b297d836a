"""Quantization vs peers on the bundled model: ours (bitsandbytes step, dynamic int8) and the PyPI peers.

    bash bench/setup_peers.sh            # once: .venv-peers with bitsandbytes, hqq, optimum-quanto, torchao
    .venv-peers/bin/python bench/bench_quant_peers.py [--windows 40] [--sequence-length 512] [--rows ...]

Every row runs in its own child process on a freshly loaded SmolLM2-135M (float32, CPU), so a peer
that crashes only loses its own row.  Perplexity: ``core.eval.perplexity.perplexity`` on the same windows of
bundled:wiki-evaluation for every row.  Wall time: the quantization alone.  In-memory MB, after the
evaluation (so layers that repack their weights at the first call have done so): the storage
of every tensor the model holds (parameters, buffers, the parts of tensor subclasses as
``__tensor_flatten__`` lists them, bitsandbytes quant states and hqq's meta tensors), each once.
Decode tokens/s (``core.eval.speed.measure_speed``, 64-token prompt, 32 new tokens, median of 3) is
measured for the unquantized model, our dynamic int8 and torchao's int8 rows.  "torchao int8 dyn" is
torchao's W8A8 (int8 per token and per output channel, dynamic), our dynamic int8's scheme without
SmoothQuant, on the same layers (down_proj and lm_head stay float in both).  Ratio rows: ours / peer perplexity.

The "ours GPTQ/RTN" rows run our technique steps in this venv with 64×512 calibration windows of
bundled:wiki-calibration (the peers here need no calibration data), so the 4- and 3-bit rows of
ours and the peers' come from one run on the same evaluation windows.  torchao's 4-bit row uses
``IntxWeightOnlyConfig`` (its ``Int4WeightOnlyConfig`` packs for GPU kernels only); quanto's int4
chooses its own groups (the largest of 128, 96, 64 dividing the input width: 96 for 576-wide
inputs, 128 for 1536-wide ones).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_window_arguments, print_table, run_child, write_results  # noqa: E402

ROWS = ["unquantized", "ours dynamic int8", "ours dynamic int8 no smoothing", "torchao int8 dyn", "ours bnb int8", "bnb int8", "ours bnb nf4", "bnb nf4",
        "hqq 8-bit", "hqq 4-bit g64", "quanto int8", "torchao int8 wo", "hqq 3-bit g64", "quanto int4",
        "torchao int4 g64 asym", "ours GPTQ 4-bit g64 asym act", "ours RTN 4-bit g64 asym",
        "ours GPTQ+MSE 3-bit g64 asym act", "torchao int3 g64 asym"]
RATIOS = [("ours bnb int8", "bnb int8"), ("ours bnb nf4", "bnb nf4"), ("ours dynamic int8", "torchao int8 dyn"),
          ("ours dynamic int8 no smoothing", "torchao int8 dyn"), ("ours dynamic int8", "quanto int8"),
          ("ours dynamic int8", "torchao int8 wo"), ("ours dynamic int8", "hqq 8-bit"),
          ("ours GPTQ 4-bit g64 asym act", "hqq 4-bit g64"), ("ours GPTQ 4-bit g64 asym act", "bnb nf4"),
          ("ours GPTQ 4-bit g64 asym act", "quanto int4"), ("ours GPTQ 4-bit g64 asym act", "torchao int4 g64 asym"),
          ("ours GPTQ+MSE 3-bit g64 asym act", "hqq 3-bit g64"),
          ("ours GPTQ+MSE 3-bit g64 asym act", "torchao int3 g64 asym")]
CALIBRATED = {  # our calibration-based rows: technique, params (64×512 windows of bundled:wiki-calibration)
    "ours GPTQ 4-bit g64 asym act": ("gptq_quantize", {"bits": 4, "group_size": 64, "symmetric": False,
                                                      "act_order": True}),
    "ours RTN 4-bit g64 asym": ("rtn_quantize", {"bits": 4, "group_size": 64, "symmetric": False}),
    "ours GPTQ+MSE 3-bit g64 asym act": ("gptq_quantize", {"bits": 3, "group_size": 64, "symmetric": False,
                                                          "act_order": True, "clip": "mse"}),
    "ours dynamic int8": ("dynamic_int8", {"measure_speed": False}),  # SmoothQuant α 0.75 from calibration
    "ours dynamic int8 no smoothing": ("dynamic_int8", {"measure_speed": False, "smoothing": 0.0}),
}
SPEED_ROWS = ("unquantized", "ours dynamic int8", "ours dynamic int8 no smoothing", "torchao int8 dyn",
              "torchao int8 wo")


def _storage(tensor, seen: set) -> int:
    import torch

    if not isinstance(tensor, torch.Tensor):
        return 0
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        return sum(_storage(getattr(tensor, name), seen) for name in flatten()[0])
    key = (tensor.data_ptr(), tensor.numel())
    if key in seen or tensor.device.type == "meta":
        return 0
    seen.add(key)
    return tensor.numel() * tensor.element_size()


def memory_mb(model) -> float:
    """Bytes of every tensor the model holds, each once, in MB (see the module docstring)."""
    seen: set = set()
    total = 0
    for module in model.modules():
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            total += _storage(tensor, seen)
            state = getattr(tensor, "quant_state", None)  # bitsandbytes 4-bit
            for part in (getattr(state, "absmax", None), getattr(getattr(state, "state2", None), "absmax", None)):
                total += _storage(part, seen)
            total += _storage(getattr(tensor, "SCB", None), seen)  # bitsandbytes int8
        meta = getattr(module, "meta", None)  # hqq
        if isinstance(meta, dict):
            for value in meta.values():
                total += _storage(value, seen)
    return total / 1e6


def quantize(row: str, model, tokenizer):
    """Apply one row's method to ``model`` (in place where the library allows); return the model."""
    import torch

    if row in CALIBRATED:
        from bench.common import apply_step

        technique, params = CALIBRATED[row]
        apply_step(model, tokenizer, technique, params, sequence_length=512, calibration_windows=64)
        return model
    if row.startswith("ours"):
        from types import SimpleNamespace

        from core.engine.params import config_from_dict
        from core.engine.registry import get_technique
        from core.events import drain

        name, params = {"ours bnb int8": ("bnb_quantize", {"mode": "int8"}),
                        "ours bnb nf4": ("bnb_quantize", {"mode": "nf4"})}[row]
        info = get_technique(name)
        drain(info.handler(model, config_from_dict(info.config_cls, params),
                           SimpleNamespace(device="cpu", tokenizer=tokenizer, step_index=0)))
        return model
    if row.startswith("bnb"):
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        config = (BitsAndBytesConfig(load_in_8bit=True) if row == "bnb int8" else BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            return AutoModelForCausalLM.from_pretrained(folder, quantization_config=config, device_map="cpu")
    if row.startswith("hqq"):
        from hqq.core.quantize import BaseQuantizeConfig
        from hqq.models.hf.base import AutoHQQHFModel

        bits = int(row.split()[1][0])
        config = BaseQuantizeConfig(nbits=bits, group_size=64 if bits < 8 else None)
        AutoHQQHFModel.quantize_model(model, quant_config=config, compute_dtype=torch.float32, device="cpu")
        return model
    if row.startswith("quanto"):
        from optimum.quanto import freeze, qint4, qint8
        from optimum.quanto import quantize as quanto_quantize

        quanto_quantize(model, weights=qint8 if row.endswith("int8") else qint4, exclude="lm_head")
        freeze(model)
        return model
    if row.startswith("torchao"):
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            IntxWeightOnlyConfig,
            quantize_,
        )
        from torchao.quantization.granularity import PerGroup
        from torchao.quantization.quant_primitives import MappingType

        # torchao's Int4WeightOnlyConfig packs for CUDA/XPU kernels only; on CPU its generic
        # IntxWeightOnlyConfig is the weight-only low-bit path (min-max per group, like plain RTN).
        config = (Int8WeightOnlyConfig() if row.endswith("int8 wo") else IntxWeightOnlyConfig(
            weight_dtype=getattr(torch, f"int{row.split()[1][3]}"), granularity=PerGroup(64),
            mapping_type=MappingType.ASYMMETRIC))
        skip = ("lm_head",)
        if row.endswith("int8 dyn"):  # W8A8, int8 per token and per channel: our dynamic int8's scheme
            config, skip = Int8DynamicActivationInt8WeightConfig(), ("lm_head", "down_proj")  # the layers ours keeps
        quantize_(model, config, filter_fn=lambda m, name: isinstance(m, torch.nn.Linear)
                  and not name.endswith(skip))
        return model
    return model


def run_one(row: str, args: argparse.Namespace) -> dict:
    """Load the model, quantize it one way, measure it; return the row."""
    import torch

    from core.data.texts import load_texts, token_windows
    from core.eval.perplexity import perplexity
    from core.models.loading import load_model

    torch.manual_seed(0)
    if row.startswith("quanto"):
        # quanto's frozen qint4 weights fail under inference_mode ("Cannot set version_counter for
        # inference tensor"); no_grad computes the same values, so this row's process evaluates with it.
        torch.inference_mode = torch.no_grad
    loaded = load_model("bundled:smollm2-135m")
    model, tokenizer = loaded.model.float().eval(), loaded.tokenizer
    windows = token_windows(load_texts("bundled:wiki-evaluation"), tokenizer, args.sequence_length, args.windows)
    result = {"method": row}
    try:
        started = time.perf_counter()
        model = quantize(row, model, tokenizer)
        result["quantize_s"] = time.perf_counter() - started
        started = time.perf_counter()
        result["perplexity"] = perplexity(model, windows).perplexity
        result["eval_s"] = time.perf_counter() - started
        result["memory_mb"] = memory_mb(model)  # after use: layers that repack at their first call have done so
        if row in SPEED_ROWS:
            from core.eval.speed import measure_speed

            result["decode_tok_s"] = measure_speed(model, tokenizer, prompt_tokens=64, new_tokens=32).decode_tokens_per_s
    except Exception as exc:  # a peer that does not run here: the row says why
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        traceback.print_exc()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_arguments(parser, calibration=None, windows=40, sequence_length=512)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        import warnings

        warnings.filterwarnings("ignore")  # bitsandbytes warns at every int8 matmul on CPU
        row = run_one(args.only, args)
        Path(args.json_out).write_text(json.dumps(row))
        print(f"ROW {json.dumps(row)}", flush=True)  # the whole row in the log, even if the run is cut short
        return
    rows = []
    for row in [r.strip() for r in args.rows.split(",")]:
        if row not in ROWS:
            raise SystemExit(f"unknown row {row!r}; choose from {', '.join(ROWS)}")
        result = run_child(__file__, ["--only", row, "--windows", str(args.windows),
                                      "--sequence-length", str(args.sequence_length)])
        rows.append(result if "error" not in result else {"method": row, **result})
        print(f"{row}: {rows[-1].get('perplexity', rows[-1].get('error'))}", flush=True)
    by_name = {r["method"]: r for r in rows}
    base = by_name.get("unquantized", {}).get("decode_tok_s")
    for row in rows:
        if base and row.get("decode_tok_s") and row["method"] != "unquantized":
            row["speedup"] = row["decode_tok_s"] / base
    for ours, peer in RATIOS:
        a, b = by_name.get(ours, {}), by_name.get(peer, {})
        if a.get("perplexity") and b.get("perplexity"):
            rows.append({"method": f"ratio {ours} / {peer} (perplexity)",
                         "perplexity": a["perplexity"] / b["perplexity"]})
    print()
    print_table(rows, [("method", "method", ""), ("perplexity", "perplexity", ".3f"),
                       ("quantize_s", "quantize s", ".1f"), ("memory_mb", "in-memory MB", ".1f"),
                       ("eval_s", "eval s", ".0f"), ("decode_tok_s", "decode tok/s", ".1f"),
                       ("speedup", "decode speed-up", ".2f"), ("error", "error", "")])
    settings = {"windows": args.windows, "sequence_length": args.sequence_length,
                "model": "bundled:smollm2-135m (float32, CPU)", "evaluation": "bundled:wiki-evaluation"}
    print(f"\nwrote {write_results('quant_peers', rows, settings)}")


if __name__ == "__main__":
    main()
