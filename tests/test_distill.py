"""Distillation: the loss, the trainer (schedule, checkpoints, resume, best), students, the causal-LM step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.engine.params import config_from_dict
from core.engine.recipe import DataSpec, Recipe
from core.engine.runner import RunContext
from core.errors import RecipeError
from core.events import Metric, drain
from core.techniques.distill.causal import DistillCausalLMConfig, apply_distill_causal_lm
from core.techniques.distill.losses import causal_lm_loss, distillation_loss
from core.techniques.distill.students import evenly_spaced
from core.techniques.distill.trainer import lr_factor
from tests.conftest import SAMPLE_TEXT
from tests.helpers import collect


def test_loss_matches_a_direct_computation():
    torch.manual_seed(0)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    y = torch.randint(0, 10, (6,))
    alpha, temp = 0.3, 2.5
    total, soft, hard = distillation_loss(s, t, y, alpha, temp)
    p_t = torch.softmax(t / temp, -1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(s / temp, -1))).sum(-1).mean() * temp ** 2
    ce = F.cross_entropy(s, y)
    assert torch.allclose(soft, kl, atol=1e-6) and torch.allclose(hard, ce, atol=1e-6)
    assert torch.allclose(total, alpha * kl + (1 - alpha) * ce, atol=1e-6)
    # identical logits: no soft loss; no teacher: hard loss only
    assert distillation_loss(s, s.clone(), y, 0.5, 2.0)[1].abs() < 1e-6
    assert torch.equal(distillation_loss(s, None, y, 0.5, 2.0)[0], ce)


def test_causal_loss_scores_the_next_token():
    torch.manual_seed(0)
    logits, ids = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    total, soft, hard = causal_lm_loss(logits, logits, ids, 0.0, 1.0)
    assert torch.allclose(hard, F.cross_entropy(logits[:, :-1].reshape(-1, 7), ids[:, 1:].reshape(-1)))


def test_learning_rate_schedules():
    assert [lr_factor(s, 10, 2, "constant") for s in (0, 1, 2, 9)] == [1 / 3, 2 / 3, 1.0, 1.0]
    assert lr_factor(2, 10, 2, "linear") == 1.0 and lr_factor(6, 10, 2, "linear") == 0.5
    assert math.isclose(lr_factor(6, 10, 2, "cosine"), 0.5) and lr_factor(10, 10, 2, "cosine") == 0.0


def test_evenly_spaced_layers():
    assert evenly_spaced(6, 3) == [0, 2, 4]
    assert evenly_spaced(6, 4) == [0, 2, 3, 5]
    assert evenly_spaced(4, 4) == [0, 1, 2, 3]


@pytest.fixture
def training_text(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text((SAMPLE_TEXT + "\n\n") * 3, encoding="utf-8")
    return path


def _ctx(tokenizer, training_text, tmp_path, resume=False):
    recipe = Recipe(data=DataSpec(calibration=str(training_text), evaluation=str(training_text), sequence_length=16,
                                  calibration_windows=8))
    return RunContext(recipe, tokenizer, "cpu", checkpoint_root=tmp_path / "ckpt", resume=resume)


def _config(**overrides):
    values = dict(student="shrink", student_layers=1, max_steps=12, eval_every=4, batch_size=4,
                  learning_rate=3e-3, schedule="constant", train_windows=24, validation_windows=4)
    values.update(overrides)
    return config_from_dict(DistillCausalLMConfig, values)


def test_short_run_loss_falls_and_emits_metrics(tiny_llama, tiny_tokenizer, training_text, tmp_path):
    job = apply_distill_causal_lm(tiny_llama, _config(), _ctx(tiny_tokenizer, training_text, tmp_path))
    events, report = collect(job)
    metrics = [e for e in events if isinstance(e, Metric)]
    names = {m.name for m in metrics}
    assert {"loss/total", "loss/soft", "loss/hard", "learning_rate", "tokens_per_s",
            "eval/perplexity", "eval/kl_to_teacher"} <= names
    losses = [m.value for m in metrics if m.name == "loss/total"]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    assert tiny_llama.config.num_hidden_layers == 1 and len(tiny_llama.model.layers) == 1
    evals = [m for m in metrics if m.name == "eval/perplexity"]
    assert [m.step for m in evals] == [0, 4, 8, 12]
    best = min(evals, key=lambda m: m.value)
    assert report.metrics["best_step"] == best.step
    assert report.metrics["student_val_perplexity_best"] == pytest.approx(best.value)


def test_cancel_and_resume_continue_like_an_uninterrupted_run(tiny_tokenizer, training_text, tmp_path, tiny_llama):
    import copy

    fresh = copy.deepcopy(tiny_llama)
    again = copy.deepcopy(tiny_llama)
    config = _config(schedule="linear", max_steps=8, eval_every=3)
    straight = drain(apply_distill_causal_lm(tiny_llama, config, _ctx(tiny_tokenizer, training_text, tmp_path / "a")))

    job = apply_distill_causal_lm(fresh, config, _ctx(tiny_tokenizer, training_text, tmp_path / "b"))
    for event in job:  # cancel right after the checkpoint at step 3 and one more training step
        if isinstance(event, Metric) and event.name == "loss/total" and event.step == 4:
            break
    job.close()
    assert (tmp_path / "b" / "ckpt").exists()
    job = apply_distill_causal_lm(again, config, _ctx(tiny_tokenizer, training_text, tmp_path / "b", resume=True))
    events, resumed = collect(job)
    steps = [e.step for e in events if isinstance(e, Metric) and e.name == "loss/total"]
    assert steps == [4, 5, 6, 7, 8] and resumed.metrics["resumed_from_step"] == 3
    assert resumed.metrics["best_step"] == straight.metrics["best_step"]
    for (name, a), b in zip(tiny_llama.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("values, message", [
    ({"alpha": 1.5}, "alpha"), ({"temperature": 0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"student": "model"}, "student_model"), ({"layer_selection": "list"}, "layer_list"),
])
def test_bad_settings_are_refused(values, message):
    with pytest.raises(RecipeError, match=message):
        config_from_dict(DistillCausalLMConfig, values)


def test_student_larger_than_teacher_is_refused(tiny_llama, tiny_tokenizer, training_text, tmp_path):
    for values, message in (({"student_layers": 5}, "more layers"), ({"student_heads": 8}, "more attention heads")):
        with pytest.raises(RecipeError, match=message):
            drain(apply_distill_causal_lm(tiny_llama, _config(**values), _ctx(tiny_tokenizer, training_text, tmp_path)))
