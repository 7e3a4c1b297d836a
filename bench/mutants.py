"""Break each technique's math on purpose and check that the tests notice (``make mutants``).

Each mutant is one text replacement in one engine file and the tests that should catch it.  The script
applies it, runs those tests, and puts the file back whatever happens; a mutant whose tests still pass
*survived*, which means the suite cannot tell that implementation from the right one.  The list is ours;
reviewers break the code in ways they do not tell us, so it should keep growing.

    .venv/bin/python bench/mutants.py            # every mutant (minutes each: the quality tests load SmolLM2)
    .venv/bin/python bench/mutants.py wanda gptq # the mutants whose name contains "wanda" or "gptq"
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUALITY = "tests/test_technique_quality.py"
CONVENTION = "tests/test_perplexity_convention.py"
TASK_ACC = "tests/test_task_accuracy.py"
TASK_DATA = "tests/test_task_data.py"
EMBEDDING = "tests/test_quant_embedding.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant("wanda ignores the activations", "core/techniques/prune/wanda.py",
           "linear.weight.mul_(wanda_mask(linear.weight, stats.norms(), sparsity, n, m))",
           "linear.weight.mul_(wanda_mask(linear.weight, torch.ones_like(stats.norms()), sparsity, n, m))",
           (f"{QUALITY}::test_wanda_beats_magnitude_and_sparsegpt_beats_wanda",)),
    Mutant("sparsegpt uses only the Hessian's diagonal", "core/techniques/prune/sparsegpt.py",
           "pruned, error = sparsegpt_prune(linear.weight, stats.hessian, sparsity, n, m,",
           "pruned, error = sparsegpt_prune(linear.weight, torch.diag(torch.diag(stats.hessian)), sparsity, n, m,",
           (f"{QUALITY}::test_wanda_beats_magnitude_and_sparsegpt_beats_wanda",)),
    Mutant("gptq uses only the Hessian's diagonal", "core/techniques/quantize/gptq.py",
           "H = hessian.detach().to(device=W.device, dtype=torch.float32).clone()",
           "H = torch.diag(torch.diag(hessian.detach().to(device=W.device, dtype=torch.float32)))",
           (f"{QUALITY}::test_gptq_beats_rounding_and_act_order_helps",)),
    Mutant("activation-aware SVD is plain SVD", "core/techniques/lowrank/svd.py",
           "down, up = whitened_svd_factors(weight, stats.hessian, rank, damp)", "down, up = svd_factors(weight, rank)",
           (f"{QUALITY}::test_activation_aware_svd_and_output_pca_beat_plain_svd_by_far",)),
    Mutant("block influence computed as zero", "core/techniques/prune/layer_drop.py",
           "return float((1.0 - cos).sum()), a.shape[0]", "return 0.0, a.shape[0]",
           (f"{QUALITY}::test_layer_drop_measures_block_influence_and_drops_the_least_influential",)),
    Mutant("gptq ignores act-order", "core/techniques/quantize/gptq.py",
           "return _gptq(weight, hessian, bits, group_size, symmetric, act_order,",
           "return _gptq(weight, hessian, bits, group_size, symmetric, False,",
           (f"{QUALITY}::test_gptq_beats_rounding_and_act_order_helps",)),
    Mutant("smoothquant skipped", "core/techniques/quantize/dynamic_int8.py",
           "if config.smoothing > 0", "if config.smoothing > 2",
           (f"{QUALITY}::test_smoothquant_lowers_the_int8_error",)),
    Mutant("distillation without the teacher", "core/techniques/distill/losses.py",
           "total = alpha * soft + (1.0 - alpha) * hard if alpha < 1.0 else soft", "total = hard",
           (f"{QUALITY}::test_causal_distillation_learns_from_the_teacher",)),
    Mutant("mixed precision ignores the measured sensitivities", "core/techniques/quantize/mixed.py",
           "(sensitivities or {}).get(name, {}).get(bits, 0.0))", "0.0)",
           (f"{QUALITY}::test_mixed_precision_beats_uniform_at_the_same_size",)),
    Mutant("the token embedding left in float", "core/techniques/quantize/common.py",
           "    if not config.quantize_embedding:\n        return", "    if True:\n        return",
           (EMBEDDING,)),
    Mutant("embedding rows dequantized with another row's scales", "core/techniques/quantize/packed_embedding.py",
           "self.weight_scale[flat]", "self.weight_scale[flat.roll(1)]",
           (EMBEDDING,)),
    Mutant("a tied head not tied to the packed embedding", "core/techniques/quantize/embedding.py",
           "        replace_module(model, head, TiedPackedHead(packed))\n", "        pass\n",
           (EMBEDDING,)),
    Mutant("classifier distillation with a zeroed teacher", "core/techniques/distill/classify.py",
           "out = teacher(**_collate([train_ids[i] for i in missing], pad_id, device)).logits.float()",
           "out = 0 * teacher(**_collate([train_ids[i] for i in missing], pad_id, device)).logits.float()",
           (f"{QUALITY}::test_a_distilled_classifier_learns_from_its_teacher",)),
    Mutant("a .txt file split into documents at blank lines", "core/data/texts.py",
           'texts = [_read_text(path).replace("\\r\\n", "\\n").strip()]',
           'texts = [d.strip() for d in re.split(r"\\n\\s*\\n", _read_text(path).replace("\\r\\n", "\\n")) if d.strip()]',
           (CONVENTION,)),
    Mutant("the beginning-of-text token never added", "core/data/texts.py",
           "        stream.extend(lead)\n", "",
           (CONVENTION,)),
    Mutant("lm-eval's tail read without its full window of context", "core/data/perplexity_windows.py",
           "start = max(0, end - length - 1)", "start = end - step - 1",
           (CONVENTION,)),
    Mutant("llama.cpp's convention scores whole chunks", "core/data/perplexity_windows.py",
           "[half] * count", "[0] * count",
           (CONVENTION,)),
    Mutant("llama.cpp's chunks keep their first token", "core/data/perplexity_windows.py",
           "        tokens[:, 0] = lead[-1]\n", "        pass\n",
           (CONVENTION,)),
    Mutant("acc_norm not divided by the choice's length", "core/eval/task_accuracy.py",
           "normalised = [ll / len(choice) for", "normalised = [ll + 0 * len(choice) for",
           (TASK_ACC,)),
    Mutant("choices scored without lm-eval's leading space", "core/eval/choice_packing.py",
           'strings = [kept] + [kept + moved + " " + choice for', 'strings = [kept] + [kept + moved + choice for',
           (TASK_ACC,)),
    Mutant("packed choices read each other", "core/eval/choice_packing.py",
           "allowed = causal & ((read == -1) | (read == reader)) & (read != -2)", "allowed = causal & (read != -2)",
           (TASK_ACC,)),
    Mutant("choice positions run on across choices", "core/eval/choice_packing.py",
           "positions += range(len(context), len(context) + len(read))", "positions += range(start, start + len(read))",
           (TASK_ACC,)),
    Mutant("standard error over n instead of n - 1", "core/eval/task_accuracy.py",
           "variance = sum((v - mean) ** 2 for v in values) / (n - 1)",
           "variance = sum((v - mean) ** 2 for v in values) / n",
           (TASK_ACC,)),
    Mutant("HellaSwag endings not preprocessed", "core/data/task_rows.py",
           "[_hellaswag_preprocess(ending) for ending in", "[ending for ending in",
           (TASK_DATA,)),
    Mutant("the quick subset ignores the seed", "core/data/task_rows.py",
           "random.Random(seed).sample(", "random.Random(0).sample(",
           (TASK_DATA,)),
]


def run(mutant: Mutant) -> tuple[str, float]:
    """Apply ``mutant``, run its tests, restore the file; return ("killed" | "SURVIVED" | "not applied", seconds)."""
    path = ROOT / mutant.path
    original = path.read_text(encoding="utf-8")
    if original.count(mutant.old) != 1:
        return "not applied (the text to replace is not there exactly once)", 0.0
    started = time.perf_counter()
    try:
        path.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests],
                                cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        path.write_text(original, encoding="utf-8")
    return ("killed" if result.returncode != 0 else "SURVIVED"), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("match", nargs="*", help="only the mutants whose name contains one of these")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.match or any(w.lower() in m.name.lower() for w in args.match)]
    survived = 0
    for mutant in chosen:
        verdict, seconds = run(mutant)
        survived += verdict != "killed"
        print(f"{verdict:>9}  {mutant.name}  ({seconds:.0f} s)", flush=True)
    print(f"{len(chosen) - survived} of {len(chosen)} mutants killed")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
