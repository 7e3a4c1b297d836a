"""Task accuracy on real SmolLM2 weights equals lm-evaluation-harness's own, row by row.

The reference is lm-eval 0.4 itself (``simple_evaluate`` with the model object in memory and its own task
YAMLs reading our installed rows, offline; see tests/lm_eval_reference.py).  Our packing of all choices
after one shared context must give lm-eval's log-likelihoods (to float noise), hence the same choice per
question, the same acc / acc_norm and the same standard errors.  A second, independent computation with
plain transformers checks the packed forward pass itself.
"""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from core.cli.commands import main
from core.data.task_rows import TASKS, ChoiceQuestion, load_task, pick_questions, tasks_ready
from core.eval.choice_packing import encode_choices
from core.eval.task_accuracy import (
    choice_predictions,
    iter_choice_loglikelihoods,
    mean_and_stderr,
    score_questions,
    task_accuracy,
)
from core.events import Log, drain
from core.models.loading import load_model
from tests.helpers import collect

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not tasks_ready(), reason="task rows missing: run `make data`")]

# per task: 40 questions, ~125 choices, each compared with lm-eval's own log-likelihood.  The first 8 rows hold
# every case the first 12 did (each task's prompt template and choice count, gold at each of ARC-Easy's 4 choices,
# BoolQ's long passages, HellaSwag's preprocessing, right and wrong answers for acc/acc_norm and their
# stderrs), so the parity proof is the same; lm-eval's reference run is a third shorter.
ROWS = 8


@pytest.fixture(scope="module")
def smollm(session_cache):
    import os

    from core import paths

    os.environ[paths.CACHE_ENV] = str(session_cache)
    return load_model("bundled:smollm2-135m")


@pytest.fixture(scope="module")
def reference(smollm, tmp_path_factory):
    from tests.lm_eval_reference import lm_eval_scores

    return lm_eval_scores(smollm.model, smollm.tokenizer, list(TASKS), ROWS, tmp_path_factory.mktemp("lm-eval"))


# ----------------------------------------------------------------------------- parity with lm-eval

@pytest.mark.parametrize("name", list(TASKS))
def test_every_row_scores_as_lm_eval_scores_it(smollm, reference, name):
    pytest.importorskip("lm_eval")
    aggregates, samples = reference[name]
    questions = load_task(name)[:ROWS]
    lls = drain(iter_choice_loglikelihoods(smollm.model, smollm.tokenizer, questions))
    ours = score_questions(name, questions, lls, rows_total=TASKS[name].rows, seconds=0.0, subset="all")
    assert len(samples) == ROWS
    for question, our_lls, sample in zip(questions, lls, samples, strict=True):
        theirs = [resp[0] for resp in sample["filtered_resps"]]
        assert our_lls == pytest.approx(theirs, abs=1e-3), question.id
        pred, pred_norm = choice_predictions(our_lls, question.choices)
        assert float(pred == question.gold) == sample["acc"]
        if "acc_norm" in sample:
            assert float(pred_norm == question.gold) == sample["acc_norm"]
    headline = "acc_norm" if "acc_norm" in samples[0] else "acc"
    assert ours.answers == "".join(str(int(sample[headline])) for sample in samples)  # per question, for pairing
    assert ours.acc == aggregates["acc,none"]
    assert ours.acc_stderr == pytest.approx(aggregates["acc_stderr,none"], rel=1e-9)
    if "acc_norm,none" in aggregates:  # lm-eval's BoolQ reports acc only
        assert ours.acc_norm == aggregates["acc_norm,none"]
        assert ours.acc_norm_stderr == pytest.approx(aggregates["acc_norm_stderr,none"], rel=1e-9)


def test_left_truncation_at_the_models_context_is_lm_evals(smollm, tmp_path):
    """Inputs longer than the context are cut from the left per choice, exactly where lm-eval cuts them."""
    pytest.importorskip("lm_eval")
    from tests.lm_eval_reference import lm_eval_scores

    names, count, context = ["boolq", "hellaswag"], 4, 40
    reference = lm_eval_scores(smollm.model, smollm.tokenizer, names, count, tmp_path, max_length=context)
    for name in names:
        questions = load_task(name)[:count]
        encoded = [encode_choices(smollm.tokenizer, q.context, q.choices) for q in questions]
        assert any(len(e.context) + len(c) > context + 1 for e in encoded for c in e.continuations)  # some are cut
        lls = drain(iter_choice_loglikelihoods(smollm.model, smollm.tokenizer, questions, max_length=context))
        for our_lls, sample in zip(lls, reference[name][1], strict=True):
            assert our_lls == pytest.approx([r[0] for r in sample["filtered_resps"]], abs=1e-3)


@pytest.mark.parametrize("add_bos", [False, True])
def test_tokens_are_split_as_lm_eval_splits_them(smollm, add_bos):
    """Context and continuation ids equal lm-eval's ``_encode_pair``, with and without a BOS-adding tokenizer."""
    pytest.importorskip("lm_eval")
    import copy

    from lm_eval.models.huggingface import HFLM

    tokenizer = smollm.tokenizer
    if add_bos:
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.add_bos_token = True
        assert tokenizer("Hello")["input_ids"][0] == tokenizer.bos_token_id
    lm = HFLM(pretrained=smollm.model, tokenizer=tokenizer, batch_size=1)
    for name in TASKS:
        for question in pick_questions(load_task(name), 40, seed=3):
            ours = encode_choices(tokenizer, question.context, question.choices)
            for choice, continuation in zip(question.choices, ours.continuations, strict=True):
                context_ids, continuation_ids = lm._encode_pair(question.context, " " + choice)
                assert (list(ours.context), list(continuation)) == (context_ids, continuation_ids)


# ----------------------------------------------------------------------------- the packed forward pass

def _separately(model, tokenizer, question: ChoiceQuestion) -> list[float]:
    """Each choice in its own plain forward pass, summed log-probabilities (written from the method, not our code)."""
    context = tokenizer(question.context)["input_ids"]
    sums = []
    for choice in question.choices:
        whole = tokenizer(question.context + " " + choice)["input_ids"]
        with torch.inference_mode():
            logprobs = F.log_softmax(model(torch.tensor([whole[:-1]])).logits[0].float(), dim=-1)
        sums.append(sum(float(logprobs[i - 1, whole[i]]) for i in range(len(context), len(whole))))
    return sums


def test_packed_choices_equal_separate_forward_passes(smollm):
    for name in ("hellaswag", "arc_challenge", "piqa"):
        questions = pick_questions(load_task(name), 5, seed=1)
        # one pass gives both the events (packing was used) and the log-likelihoods
        events, lls = collect(iter_choice_loglikelihoods(smollm.model, smollm.tokenizer, questions, token_budget=512))
        assert not any(isinstance(e, Log) and "separately" in e.message for e in events)  # packing was used
        for question, packed in zip(questions, lls, strict=True):
            assert packed == pytest.approx(_separately(smollm.model, smollm.tokenizer, question), abs=1e-3)


def test_a_model_that_ignores_the_packing_mask_is_scored_choice_by_choice(smollm):
    """An attention that drops custom masks would mix the choices; the self-check notices and falls back."""

    class IgnoresMasks(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, position_ids=None, attention_mask=None, **kwargs):
            return self.inner(input_ids=input_ids, use_cache=False)  # plain causal: later choices read earlier ones

    questions = pick_questions(load_task("arc_easy"), 4, seed=2)
    events, lls = collect(iter_choice_loglikelihoods(IgnoresMasks(smollm.model), smollm.tokenizer, questions))
    assert any(isinstance(e, Log) and "separately" in e.message for e in events)
    for question, got in zip(questions, lls, strict=True):
        assert got == pytest.approx(_separately(smollm.model, smollm.tokenizer, question), abs=1e-3)


# ----------------------------------------------------------------------------- metrics

def test_acc_norm_divides_by_the_choices_length_in_characters():
    # -10 over 2 characters is -5 per character, -12 over 6 is -2: acc picks the first, acc_norm the second
    assert choice_predictions([-10.0, -12.0], ("ab", "abcdef")) == (0, 1)
    assert choice_predictions([-3.0, -3.0], ("x", "y")) == (0, 0)  # ties go to the first, as numpy's argmax


def test_standard_error_is_the_sample_deviation_over_root_n():
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    mean, stderr = mean_and_stderr(values)
    assert mean == pytest.approx(4 / 7)
    assert stderr == pytest.approx(statistics.stdev(values) / math.sqrt(len(values)))
    assert math.isnan(mean_and_stderr([1.0])[1])


# ----------------------------------------------------------------------------- where a person uses it

def test_eval_command_writes_each_tasks_scores(smollm, tmp_path, capsys):
    out = tmp_path / "scores.json"
    assert main(["-q", "eval", "bundled:smollm2-135m", "--tasks", "arc_easy,piqa", "--limit", "10",
                 "--no-perplexity", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert set(written["tasks"]) == {"arc_easy", "piqa"} and "perplexity" not in written
    direct = task_accuracy(smollm.model, smollm.tokenizer, "arc_easy", limit=10)
    score = written["tasks"]["arc_easy"]
    assert (score["n"], score["rows_total"]) == (10, 2376)
    assert (score["acc"], score["acc_norm"], score["stderr"]) == (direct.acc, direct.acc_norm, direct.acc_norm_stderr)
    assert "ARC-Easy" in capsys.readouterr().out
    # its own earlier file is replaced; anything else is never overwritten
    assert main(["-q", "eval", "bundled:smollm2-135m", "--tasks", "piqa", "--limit", "2", "--no-perplexity",
                 "--json", str(out)]) == 0
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"mine": true}')
    assert main(["eval", "bundled:smollm2-135m", "--tasks", "piqa", "--json", str(foreign)]) == 2
    assert "never replaced" in capsys.readouterr().err and foreign.read_text() == '{"mine": true}'
    assert main(["eval", "bundled:smollm2-135m", "--tasks", "arc_eas"]) == 2
    assert "Unknown task(s) arc_eas" in capsys.readouterr().err


def test_a_run_scores_the_original_and_the_result_on_the_same_questions(smollm, tmp_path):
    """Through the runner, on real weights: 'before' is the original's accuracy on the seeded subset (equal to
    scoring it directly), and half the weights pruned by magnitude changes the answers."""
    from core.engine.recipe import Recipe
    from core.engine.runner import run_recipe

    recipe = Recipe.from_dict({"model": {"source": "bundled:smollm2-135m"},
                               "evaluation": {"perplexity": False, "kl_to_teacher": False, "tasks": ["arc_easy"],
                                              "task_limit": 40},
                               "steps": [{"technique": "magnitude_prune", "params": {"sparsity": 0.5}}]})
    report = drain(run_recipe(recipe, tmp_path / "out"))
    before, after = report["before"]["tasks"]["arc_easy"], report["after"]["tasks"]["arc_easy"]
    direct = task_accuracy(smollm.model, smollm.tokenizer, "arc_easy", limit=40, seed=recipe.seed)
    assert (before["acc"], before["acc_norm"]) == (direct.acc, direct.acc_norm)
    assert before["subset"] == after["subset"] == "40 of 2376 drawn at random (seed 0)"
    assert (after["acc"], after["acc_norm"]) != (before["acc"], before["acc_norm"])
