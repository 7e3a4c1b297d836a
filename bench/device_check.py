"""Every technique on the bundled model: CPU (float32) next to CUDA (bfloat16 where it applies), timed.

    bench/device_check.sh [--only gptq_quantize,wanda_prune] [--cpu-only]

Run it whenever a GPU machine is lent: each registered causal-LM technique is applied once on the CPU and
once on the GPU to a freshly loaded SmolLM2-135M (few calibration windows, a few training steps for the
training techniques), and the table prints the step's seconds and the result's perplexity on each device.
A technique that cannot run on a device says why instead.  On a machine without CUDA it prints that and
exits 0 (``--cpu-only`` runs the CPU column alone, to check the script itself).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Small settings so every technique finishes in seconds to a minute; training techniques take a few steps.
PARAMS = {
    "distill_causal_lm": {"max_steps": 5, "train_windows": 16, "batch_size": 4, "validation_windows": 2},
    "qat": {"max_steps": 5, "train_windows": 16, "batch_size": 4, "validation_windows": 2},
    "mixed_precision_quantize": {"sensitivity_windows": 2},
    "share_layers": {"score_windows": 4},
}
CALIBRATION_WINDOWS, SEQUENCE_LENGTH, EVAL_WINDOWS = 8, 256, 4


def _one(technique: str, device: str, dtype) -> dict:
    """Apply ``technique`` on ``device`` in ``dtype``; return seconds and perplexity (or why it cannot run)."""
    import torch

    from core.data.perplexity_windows import perplexity_windows
    from core.data.texts import load_texts
    from core.engine.params import config_from_dict
    from core.engine.recipe import DataSpec, Recipe
    from core.engine.registry import get_technique
    from core.engine.runner import RunContext
    from core.eval.perplexity import perplexity
    from core.events import drain
    from core.models.loading import load_model

    info = get_technique(technique)
    reason = info.unavailable_reason(device=device, task="causal-lm")
    if reason:
        return {"note": reason}
    loaded = load_model("bundled:smollm2-135m")
    model = loaded.model.to(device=device, dtype=dtype)
    recipe = Recipe(data=DataSpec(sequence_length=SEQUENCE_LENGTH, calibration_windows=CALIBRATION_WINDOWS))
    teacher = copy.deepcopy(model) if info.needs.teacher else None
    ctx = RunContext(recipe, loaded.tokenizer, device, teacher=teacher)
    config = config_from_dict(info.config_cls, PARAMS.get(technique, {}))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    try:
        drain(info.handler(model, config, ctx))
    except Exception as exc:  # a failure is a finding of this check, printed in its row
        return {"note": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    model = ctx.take_replacement() or model
    windows = perplexity_windows(load_texts("bundled:wiki-evaluation"), loaded.tokenizer, SEQUENCE_LENGTH,
                                 EVAL_WINDOWS)
    return {"seconds": seconds, "perplexity": perplexity(model.to(device), windows).perplexity}


def main() -> int:
    import torch

    from core.engine.registry import techniques

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated technique names (default: every one)")
    parser.add_argument("--cpu-only", action="store_true", help="the CPU column alone (checks the script)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.cpu_only:
        print("CUDA is absent on this machine: nothing to compare; run this where a GPU is lent.")
        return 0
    names = [n for n in args.only.split(",") if n] or sorted(
        name for name, info in techniques().items() if "causal-lm" in info.needs.tasks)
    columns = [("cpu", torch.float32)] + ([] if args.cpu_only else [("cuda:0", torch.bfloat16)])
    gpu = torch.cuda.get_device_name(0) if not args.cpu_only else "—"
    print(f"bundled SmolLM2-135M, {CALIBRATION_WINDOWS}×{SEQUENCE_LENGTH} calibration tokens, perplexity on "
          f"{EVAL_WINDOWS} windows; CPU float32 ({torch.get_num_threads()} threads) vs {gpu} bfloat16")
    header = f"{'technique':<26}" + "".join(f"{d + ' s':>12}{d + ' ppl':>14}" for d, _ in columns)
    print(header)
    print("-" * len(header))
    for name in names:
        cells, notes = [], []
        for device, dtype in columns:
            row = _one(name, device, dtype)
            if "note" in row:
                cells.append(f"{'—':>12}{'—':>14}")
                notes.append(f"{device}: {row['note']}")
            else:
                cells.append(f"{row['seconds']:>12.1f}{row['perplexity']:>14.2f}")
        print(f"{name:<26}" + "".join(cells) + ("   " + "; ".join(notes) if notes else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
