"""The pre-flight estimate (core/engine/estimate.py: plain arithmetic on the model's per-layer summary).

Sizes must follow what each technique really stores (quantization keeps every parameter and packs only
the targeted Linears; pruning to zeros keeps parameters and lowers the non-zero count); times come from a
measured forward pass (fed here as a probe value); ``phase_seconds`` splits the time into the runner's phases.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from core.engine.estimate import estimate
from core.engine.recipe import Recipe, Step, load_recipe
from core.engine.registry import get_technique
from core.engine.throughput import Throughput, keep_throughput, load_throughput, throughput_key
from core.techniques.quantize.packed_linear import packed_storage_bytes

PRESETS = Path(__file__).resolve().parents[1] / "resources" / "presets"


def _row(name: str, kind: str, shape: list[int]) -> SimpleNamespace:
    params = shape[0] * (shape[1] if len(shape) > 1 else 1)
    return SimpleNamespace(name=name, kind=kind, shape=shape, params=params, nonzero=params)


def smollm_like_summary() -> SimpleNamespace:
    """SmolLM2-135M's layer shapes (30 blocks, hidden 576, MLP 1536, vocab 49152, tied head), float32."""
    rows = [_row("model.embed_tokens", "Embedding", [49152, 576])]
    for block in range(30):
        prefix = f"model.layers.{block}"
        rows += [_row(f"{prefix}.self_attn.q_proj", "Linear", [576, 576]),
                 _row(f"{prefix}.self_attn.k_proj", "Linear", [192, 576]),
                 _row(f"{prefix}.self_attn.v_proj", "Linear", [192, 576]),
                 _row(f"{prefix}.self_attn.o_proj", "Linear", [576, 576]),
                 _row(f"{prefix}.mlp.gate_proj", "Linear", [1536, 576]),
                 _row(f"{prefix}.mlp.up_proj", "Linear", [1536, 576]),
                 _row(f"{prefix}.mlp.down_proj", "Linear", [576, 1536]),
                 _row(f"{prefix}.input_layernorm", "LlamaRMSNorm", [576]),
                 _row(f"{prefix}.post_attention_layernorm", "LlamaRMSNorm", [576])]
    rows.append(_row("model.norm", "LlamaRMSNorm", [576]))
    params = sum(r.params for r in rows)
    return SimpleNamespace(parameters=params, nonzero_parameters=params, bytes_in_memory=params * 4,
                           hidden_size=576, num_layers=30, vocab_size=49152, dtype="float32",
                           bytes_on_disk=98_362_432, layers=rows)


SUMMARY = smollm_like_summary()
# An idle laptop core pair: a 256-token forward pass of the 135M model in 0.35 s (measured on this machine idle).
FAST = Throughput(seconds=0.35, tokens=256, parameters=SUMMARY.parameters, device="cpu", threads=2)


def _recipe(technique: str, source: str = "some/folder", **params) -> Recipe:
    recipe = Recipe.from_dict({"model": {"source": source}})
    info = get_technique(technique)
    recipe.steps = [Step(info.name, info.config_cls(**params))]
    return recipe


def _estimate(recipe: Recipe, summary=SUMMARY, available=None, **options):
    options.setdefault("throughput", FAST)
    options.setdefault("original_kept", False)
    return estimate(summary, recipe, "cpu", available, **options)


def test_gptq_4bit_keeps_every_parameter_and_packs_only_the_targeted_linears():
    est = _estimate(_recipe("gptq_quantize", source="bundled:smollm2-135m", bits=4, group_size=64, symmetric=False))
    assert est.output_parameters == SUMMARY.parameters  # quantization removes no parameter
    linears = [r for r in SUMMARY.layers if r.kind == "Linear"]
    table = [r for r in SUMMARY.layers if r.kind == "Embedding"]  # quantize_embedding on, 8 bits by default
    packed = sum(packed_storage_bytes(r.shape[1], r.shape[0], 4, 64, False, scale_bytes=4) for r in linears)
    packed_table = sum(packed_storage_bytes(r.shape[1], r.shape[0], 8, 64, False, scale_bytes=4) for r in table)
    rest = (SUMMARY.parameters - sum(r.params for r in linears + table)) * 2  # norms saved as bfloat16
    assert est.output_bytes == pytest.approx(packed + packed_table + rest, rel=0.001)
    off = _estimate(_recipe("gptq_quantize", source="bundled:smollm2-135m", bits=4, group_size=64, symmetric=False,
                            quantize_embedding=False))
    assert off.output_bytes - est.output_bytes == pytest.approx(
        sum(r.params * 2 - packed_storage_bytes(r.shape[1], r.shape[0], 8, 64, False, 4) for r in table), rel=0.001)
    linear_bf16 = sum(r.params for r in linears) * 2
    assert packed / linear_bf16 == pytest.approx(4.5625 / 16, rel=0.01)  # about 4/16 of their bytes, + scales
    assert "4-bit packed (GPTQ)" in est.output_dtype and "bfloat16 for the rest" in est.output_dtype


def test_quantized_output_format_is_not_plain_bfloat16():
    for technique in ("gptq_quantize", "rtn_quantize"):
        est = _estimate(_recipe(technique, source="bundled:smollm2-135m", bits=8))
        assert est.output_dtype != "bfloat16"
        assert est.output_dtype.startswith("8-bit packed (")


def test_a_quantized_step_is_measured_against_the_real_saved_folder(tmp_path, tiny_llama, tiny_llama_dir, text_file):
    from core.models.model_info import inspect_model
    from tests.helpers import run_step

    summary = inspect_model(tiny_llama, with_layers=True)
    recipe = _recipe("gptq_quantize", source=str(tiny_llama_dir), bits=4, group_size=32, symmetric=False)
    est = _estimate(recipe, summary=summary)
    _, report = run_step(tmp_path, tiny_llama_dir, text_file, "gptq_quantize",
                         {"bits": 4, "group_size": 32, "symmetric": False})
    assert est.output_parameters == report["after"]["parameters"] == summary.parameters
    assert est.output_bytes == pytest.approx(report["after"]["bytes_on_disk"], rel=0.15)  # + safetensors headers
    assert est.output_bytes < 0.5 * summary.bytes_in_memory


def test_pruning_to_zeros_keeps_parameters_and_lowers_the_nonzero_count():
    est = _estimate(_recipe("wanda_prune", pattern="2:4"))
    assert est.output_parameters == SUMMARY.parameters
    linear = sum(r.params for r in SUMMARY.layers if r.kind == "Linear")
    assert est.output_nonzero == pytest.approx(SUMMARY.parameters - linear / 2, rel=0.001)
    assert est.output_bytes == SUMMARY.bytes_in_memory  # a dense float32 folder: zeros take their bytes


def test_structured_pruning_removes_parameters():
    est = _estimate(_recipe("mlp_prune", reduction=0.25))
    mlp = sum(r.params for r in SUMMARY.layers if ".mlp." in r.name)
    assert est.output_parameters == pytest.approx(SUMMARY.parameters - 0.25 * mlp, rel=0.001)


def test_the_quick_magnitude_preset_is_under_a_minute_on_a_fast_enough_machine():
    recipe = load_recipe(PRESETS / "quick-magnitude-30.yaml")
    est = _estimate(recipe)
    assert est.seconds < 60
    assert dict(est.phase_seconds)["step 1: magnitude_prune"] < 10
    slow = _estimate(recipe, throughput=Throughput(3.5, 256, SUMMARY.parameters, "cpu", 2))
    assert slow.seconds > 5 * est.seconds - 30  # a machine 10× slower waits far longer (load/save do not scale)


def test_the_rtn_preset_step_takes_seconds_as_its_description_says():
    est = _estimate(load_recipe(PRESETS / "rtn-8bit.yaml"))
    assert est.step_seconds() < 30
    assert est.seconds < 5 * 60  # the measuring before and after is most of the run


def test_phase_seconds_name_the_runners_phases_in_order_and_sum_to_the_total():
    recipe = _recipe("wanda_prune", sparsity=0.5)
    recipe.steps.append(Step("gptq_quantize", get_technique("gptq_quantize").config_cls(bits=4)))
    off = Step("rtn_quantize", get_technique("rtn_quantize").config_cls(bits=8))
    off.enabled = False
    recipe.steps.append(off)
    est = _estimate(recipe)
    assert [name for name, _ in est.phase_seconds] == ["load", "measure original", "step 1: wanda_prune",
                                                       "step 2: gptq_quantize", "measure result", "save"]
    assert sum(s for _, s in est.phase_seconds) == pytest.approx(est.seconds)
    assert all(s > 0 for _, s in est.phase_seconds)


def test_kept_original_measurements_cost_nothing():
    recipe = _recipe("magnitude_prune", sparsity=0.5)
    fresh, kept = _estimate(recipe), _estimate(recipe, original_kept=True)
    assert dict(kept.phase_seconds)["measure original"] == 0
    assert fresh.seconds - kept.seconds == pytest.approx(dict(fresh.phase_seconds)["measure original"])
    assert dict(fresh.phase_seconds)["measure original"] > 0


def test_owl_costs_one_more_calibration_pass_than_uniform():
    uniform = _estimate(_recipe("wanda_prune", sparsity=0.5))
    owl = _estimate(_recipe("wanda_prune", sparsity=0.5, schedule="owl"))
    data = Recipe().data
    one_pass = FAST.seconds_per_token * data.sequence_length * data.calibration_windows
    assert owl.seconds - uniform.seconds == pytest.approx(one_pass) and one_pass > 0
    assert owl.output_bytes == uniform.output_bytes


def test_memory_that_does_not_fit_is_flagged():
    recipe = _recipe("magnitude_prune", sparsity=0.5)
    assert _estimate(recipe).fits
    small = _estimate(recipe, available=100_000_000)
    assert not small.fits and small.peak_bytes > SUMMARY.bytes_in_memory


def test_the_saved_format_is_named_as_it_will_be_written():
    bundled = _recipe("magnitude_prune", source="bundled:smollm2-135m")
    assert _estimate(bundled).output_dtype == "bfloat16"  # auto saves a GGUF as bfloat16
    folder = _recipe("magnitude_prune")
    assert _estimate(folder).output_dtype == "float32"
    folder.output.dtype = "float16"
    assert _estimate(folder).output_dtype == "float16"


def test_dynamic_int8_smoothing_costs_one_pass_and_the_file_keeps_its_size():
    smoothed = _estimate(_recipe("dynamic_int8", smoothing=0.75, smoothing_windows=4096))
    plain = _estimate(_recipe("dynamic_int8", smoothing=0.0))
    data = Recipe().data
    one_pass = FAST.seconds_per_token * data.sequence_length * data.calibration_windows
    assert smoothed.seconds - plain.seconds == pytest.approx(one_pass)
    assert smoothed.output_bytes == plain.output_bytes == SUMMARY.bytes_in_memory
    assert any("not smaller" in note for note in plain.notes)
    assert not any("guesses" in note for note in plain.notes)


def test_without_a_probe_the_time_is_arithmetic_and_says_so():
    est = _estimate(_recipe("magnitude_prune"), throughput=None)
    assert not est.timed
    assert any("plain arithmetic" in note for note in est.notes)


def test_a_kept_probe_is_found_by_model_device_and_threads():
    from core.engine.throughput import torch_threads

    key = throughput_key("some/folder", SUMMARY.parameters, "float32", "cpu", torch_threads())
    keep_throughput(key, FAST)
    assert load_throughput(key) == FAST
    est = estimate(SUMMARY, _recipe("magnitude_prune"), "cpu", None, original_kept=False)
    assert est.timed and est.seconds == pytest.approx(_estimate(_recipe("magnitude_prune")).seconds)
    assert load_throughput(throughput_key("some/folder", SUMMARY.parameters, "float32", "cuda:0", 2)) is None


def test_task_scoring_is_planned_meter_by_meter_under_the_names_the_runner_reports(
        tmp_path, tiny_llama, tiny_llama_dir, text_file):
    """Scoring tasks takes minutes: the plan counts it, per task, in both measuring phases, under the
    names the runner's progress events really carry (so the Run page knows which meters are still to come)."""
    from core.events import Progress, StageStarted
    from core.models.model_info import inspect_model
    from tests.helpers import run_step

    evaluation = {"tasks": ["arc_easy", "hellaswag"], "task_limit": 4, "speed": True, "kl_to_teacher": True}
    summary = inspect_model(tiny_llama, with_layers=True)
    recipe = _recipe("magnitude_prune", source=str(tiny_llama_dir), sparsity=0.5)
    recipe.evaluation.tasks, recipe.evaluation.task_limit = evaluation["tasks"], evaluation["task_limit"]
    recipe.evaluation.speed = True
    est = _estimate(recipe, summary=summary)
    plain = _recipe("magnitude_prune", source=str(tiny_llama_dir), sparsity=0.5)
    plain.evaluation.speed = True
    without = _estimate(plain, summary=summary)
    for phase in ("measure original", "measure result"):
        parts = dict(est.measure_parts[phase])
        assert sum(parts.values()) == pytest.approx(dict(est.phase_seconds)[phase])
        # HellaSwag's questions are about four times as long as ARC-Easy's
        assert parts["task HellaSwag"] == pytest.approx(parts["task ARC-Easy"] * 161 / 40)
        assert dict(est.phase_seconds)[phase] - dict(without.phase_seconds)[phase] == pytest.approx(
            parts["task HellaSwag"] + parts["task ARC-Easy"])
    assert "kl" in dict(est.measure_parts["measure result"]) and "kl" not in dict(est.measure_parts["measure original"])

    events, _report = run_step(tmp_path, tiny_llama_dir, text_file, "magnitude_prune", {"sparsity": 0.5},
                               evaluation=evaluation)
    reported: dict[str, list[str]] = {}
    phase = None
    for event in events:
        if isinstance(event, StageStarted):
            phase = {"measure_before": "measure original", "measure_after": "measure result"}.get(event.stage)
        elif isinstance(event, Progress) and phase is not None and event.stage not in reported.setdefault(phase, []):
            reported[phase].append(event.stage)
    planned = {phase: [name for name, _ in parts] for phase, parts in est.measure_parts.items()}
    assert reported == planned


def test_a_busy_machine_is_said_now_and_a_probe_timed_busy_says_its_times_may_be_long(monkeypatch):
    import core.engine.estimate as estimate_module

    monkeypatch.setattr(estimate_module, "machine_load", lambda: (8.1, 2))
    busy_now = _estimate(_recipe("magnitude_prune"))
    assert any("busy now (load 8.1 on 2 cores)" in note for note in busy_now.notes)
    monkeypatch.setattr(estimate_module, "machine_load", lambda: (0.4, 2))
    quiet = _estimate(_recipe("magnitude_prune"))
    assert not any("busy" in note for note in quiet.notes)
    timed_busy = Throughput(seconds=1.4, tokens=256, parameters=SUMMARY.parameters, device="cpu", threads=2,
                            load_average=8.1, cores=2)
    assert timed_busy.busy and not FAST.busy
    assert any("timed while the machine was busy" in note
               for note in _estimate(_recipe("magnitude_prune"), throughput=timed_busy).notes)


def test_a_probe_timed_on_a_busy_machine_is_timed_again_and_the_quicker_one_kept(monkeypatch):
    """Wanda 50% was estimated at 15.6 min (real 4–5) from a probe taken under load 8: it must not stay."""
    import core.engine.throughput as throughput
    from core.engine.throughput import iter_probe, torch_threads
    from core.events import drain

    summary = SimpleNamespace(parameters=SUMMARY.parameters, dtype="float32")
    key = throughput_key("some/folder", summary.parameters, "float32", "cpu", torch_threads())
    slow = Throughput(seconds=1.4, tokens=256, parameters=summary.parameters, device="cpu", threads=2,
                      load_average=8.1, cores=2)
    quick = Throughput(seconds=0.35, tokens=256, parameters=summary.parameters, device="cpu", threads=2,
                       load_average=0.5, cores=2)
    timed = []

    def fake_measure(model, parameters, device):
        timed.append(1)
        return measured

    monkeypatch.setattr(throughput, "measure_throughput", fake_measure)
    keep_throughput(key, slow)
    measured = quick
    assert drain(iter_probe(None, "some/folder", summary, "cpu")) == quick and timed == [1]
    assert load_throughput(key) == quick
    # a quiet probe is kept: the next load does not time again
    assert drain(iter_probe(None, "some/folder", summary, "cpu")) == quick and timed == [1]
    # a busy probe timed again on a machine even slower now keeps the quicker (older) one
    keep_throughput(key, slow)
    measured = Throughput(seconds=2.0, tokens=256, parameters=summary.parameters, device="cpu", threads=2,
                          load_average=9.0, cores=2)
    assert drain(iter_probe(None, "some/folder", summary, "cpu")) == slow and load_throughput(key) == slow
