"""Causal LM distillation: the student learns the teacher's next-token distributions on text.

Training data are token windows of the recipe's calibration text (optionally plus or replaced by
*synthetic* text: the teacher continues prompts cut from that text, sampling with top-p 0.95).  The
last ``validation_windows`` windows of the calibration text are held out: at each evaluation the
student's perplexity on them and its KL divergence to the teacher are measured, and the checkpoint
with the lowest validation perplexity becomes the result.  The recipe's evaluation text stays
untouched for the run's before/after measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.data.texts import load_texts, token_windows
from core.engine.params import param
from core.engine.registry import Needs, StepReport, register
from core.errors import RecipeError
from core.eval.perplexity import iter_kl_to_teacher, iter_perplexity
from core.events import Log, Progress
from core.techniques.distill.losses import causal_lm_loss
from core.techniques.distill.options import LossOptions, TrainingOptions, settings_for, shuffled_batch
from core.techniques.distill.session import checkpoint_store, prepare_pair
from core.techniques.distill.students import DistillationChecks, StudentOptions
from core.techniques.distill.trainer import train
from core.techniques.prune.slicing import parameter_count

SYNTHETIC = ("off", "add", "only")


@dataclass
class DistillCausalLMConfig(DistillationChecks, StudentOptions, LossOptions, TrainingOptions):
    sequence_length: int = param(0, "Tokens per training window (0 = the recipe's sequence length).", minimum=0,
                                 maximum=8192, label="Tokens per training window", expert=True)
    train_windows: int = param(256, "How many windows of calibration text to train on (fewer if the text is "
                               "shorter).", minimum=1, maximum=1_000_000, label="Training windows")
    validation_windows: int = param(8, "Windows held out from the calibration text to measure perplexity and "
                                    "KL to the teacher at each evaluation.", minimum=1, maximum=10_000,
                                    label="Held-out windows", expert=True)
    synthetic: str = param("off", "Teacher-written text: off, add (train on both), only (train on it alone). The "
                           "teacher continues prompts cut from the calibration text.", choices=SYNTHETIC,
                           label="Teacher-written text")
    synthetic_samples: int = param(32, "How many synthetic windows the teacher writes.", minimum=1,
                                   maximum=100_000, label="Teacher-written windows", expert=True)
    prompt_tokens: int = param(32, "Tokens of calibration text each synthetic window starts from.", minimum=1,
                               label="Prompt tokens per window", expert=True)



def split_windows(ctx, config) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, held-out) token windows of the recipe's calibration text, as ``config`` sizes them.

    ``config`` has ``sequence_length`` (0 = the recipe's), ``train_windows`` and ``validation_windows``;
    the held-out windows are the last ones.
    """
    data = ctx.recipe.data
    length = config.sequence_length or data.sequence_length
    texts = load_texts(data.calibration, data.text_column)
    windows = token_windows(texts, ctx.tokenizer, length, config.train_windows + config.validation_windows)
    if windows.shape[0] <= config.validation_windows:
        raise RecipeError(f"the calibration text gives only {windows.shape[0]} windows of {length} tokens, not "
                          f"enough to hold {config.validation_windows} out for validation and train on the rest: "
                          "use more text, shorter windows or fewer validation_windows")
    return windows[:-config.validation_windows], windows[-config.validation_windows:]


def synthetic_windows(teacher, prompts: torch.Tensor, length: int, seed: int, step_index=None, batch: int = 4):
    """Generator: the teacher continues each prompt row to ``length`` tokens (top-p sampling); returns [n, length]."""
    device = next(teacher.parameters()).device
    generator_seed = torch.random.get_rng_state()
    torch.manual_seed(seed)
    rows = []
    try:
        for start in range(0, prompts.shape[0], batch):
            chunk = prompts[start:start + batch].to(device)
            new = length - chunk.shape[1]
            with torch.no_grad():
                out = teacher.generate(input_ids=chunk, attention_mask=torch.ones_like(chunk), do_sample=True,
                                       top_p=0.95, temperature=1.0, max_new_tokens=new, min_new_tokens=new,
                                       pad_token_id=teacher.config.eos_token_id)
            rows.append(out[:, :length].cpu())
            yield Progress("Teacher writing synthetic text", start + chunk.shape[0], prompts.shape[0], None,
                           step_index)
    finally:
        torch.random.set_rng_state(generator_seed)
    return torch.cat(rows)


def train_on_windows(student, teacher, train_windows: torch.Tensor, val_windows: torch.Tensor, config, ctx, *,
                     stage: str, store_name: str):
    """Generator: train ``student`` on token windows with the distillation loss against ``teacher``.

    The one causal-LM training job (distillation and quantization-aware training share it): seeded
    shuffled batches, ``causal_lm_loss`` (α, temperature), validation perplexity and KL to the teacher
    at each evaluation, checkpoints under ``store_name`` (resumable).  Returns (TrainResult, the
    teacher's validation perplexity); the best evaluated weights are left in ``student``.
    """
    device = next(student.parameters()).device
    count, length = train_windows.shape
    seed = ctx.recipe.seed + 7919 * (ctx.step_index + 1)
    settings = settings_for(config, count, seed=seed, device=str(device), metric="perplexity",
                            higher_is_better=False, unit="tokens", stage=stage, step_index=ctx.step_index)

    def batch_at(index: int) -> torch.Tensor:
        return train_windows[shuffled_batch(index, count, config.batch_size, seed)]

    def compute_loss(net, batch):
        ids = batch.to(device)
        teacher_logits = None
        if config.alpha > 0:
            with torch.no_grad():
                teacher_logits = teacher(input_ids=ids, use_cache=False).logits
        logits = net(input_ids=ids, use_cache=False).logits
        total, soft, hard = causal_lm_loss(logits, teacher_logits, ids, config.alpha, config.temperature)
        return total, soft.detach(), hard.detach(), ids.numel()

    def evaluate(net):
        ppl = yield from iter_perplexity(net, val_windows)
        kl = yield from iter_kl_to_teacher(net, teacher, val_windows)
        return {"perplexity": ppl.perplexity, "kl_to_teacher": kl.kl_per_token}

    teacher_ppl = (yield from iter_perplexity(teacher, val_windows)).perplexity
    yield Log(f"Teacher validation perplexity {teacher_ppl:.3f}; training {settings.total_steps} steps on "
              f"{count} windows of {length} tokens")
    result = yield from train(student, batch_at=batch_at, compute_loss=compute_loss, evaluate=evaluate,
                              settings=settings, store=checkpoint_store(ctx, store_name),
                              resume=bool(getattr(ctx, "resume", False)))
    return result, teacher_ppl


@register("distill_causal_lm", title="Distillation (causal LM)", family="distillation",
          summary="Train a smaller student (fewer layers/heads, a model you name, or the pruned model itself) to "
                  "imitate the teacher's next-token probabilities on text. Streams loss and validation "
                  "perplexity; checkpoints; resumable.",
          config=DistillCausalLMConfig, needs=Needs(calibration_data=True, teacher=True, trains=True,
                                                    tasks=("causal-lm",)))
def apply_distill_causal_lm(model, config: DistillCausalLMConfig, ctx):
    """Handler: build the pair, cut train/validation windows, train with the distillation loss, keep the best."""
    train_windows, val_windows = split_windows(ctx, config)
    student, teacher, notes = yield from prepare_pair(model, config, ctx, "causal-lm")
    length = train_windows.shape[1]
    if config.synthetic != "off":
        prompts = train_windows[:config.synthetic_samples, :min(config.prompt_tokens, length - 1)]
        if prompts.shape[0] < config.synthetic_samples:
            prompts = prompts.repeat((config.synthetic_samples + prompts.shape[0] - 1) // prompts.shape[0], 1)
            prompts = prompts[:config.synthetic_samples]
        yield Log(f"The teacher writes {prompts.shape[0]} synthetic windows of {length} tokens")
        written = yield from synthetic_windows(teacher, prompts, length, ctx.recipe.seed, ctx.step_index)
        train_windows = written if config.synthetic == "only" else torch.cat([train_windows, written])
        notes.append(f"Trained on {written.shape[0]} teacher-written windows"
                     + (" only." if config.synthetic == "only" else " besides the calibration text."))
    count = train_windows.shape[0]
    result, teacher_ppl = yield from train_on_windows(student, teacher, train_windows, val_windows, config, ctx,
                                                      stage="Distilling", store_name="distill")
    first = result.history[0] if result.history else {}
    best = next((h for h in result.history if h["step"] == result.best_step), {})
    metrics = {"steps": result.steps, "best_step": result.best_step or 0, "teacher_val_perplexity": teacher_ppl,
               "student_val_perplexity_start": first.get("perplexity", float("nan")),
               "student_val_perplexity_best": best.get("perplexity", float("nan")),
               "kl_to_teacher_best": best.get("kl_to_teacher", float("nan")),
               "parameters": parameter_count(student), "train_windows": count, "seconds": result.seconds}
    if result.resumed_from is not None:
        metrics["resumed_from_step"] = result.resumed_from
    return StepReport(
        summary=f"Distilled for {result.steps} steps: validation perplexity "
                f"{metrics['student_val_perplexity_start']:.2f} → {metrics['student_val_perplexity_best']:.2f} "
                f"(teacher {teacher_ppl:.2f}), best at step {result.best_step}.",
        metrics=metrics, layers=result.history,
        notes=notes + ["Validation windows are held out from the calibration text; the recipe's evaluation "
                       "text is not used for choosing the checkpoint."])
