"""The distillation loss, as pure functions on logits (Hinton et al. 2015).

``total = α · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − α) · CE(student, target)``

The KL term ("soft" loss) pulls the student's whole distribution towards the teacher's, softened
by the temperature T; the T² factor keeps its gradients on the same scale as the cross-entropy
("hard" loss) whatever T is.  Both terms are means over the scored positions (tokens or examples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.errors import RecipeError

IGNORE_INDEX = -100


def check_loss_settings(alpha: float, temperature: float) -> None:
    """Raise RecipeError for α outside [0, 1] or a temperature that is not positive."""
    if not 0.0 <= alpha <= 1.0:
        raise RecipeError(f"alpha = {alpha} is not allowed: it is the weight of the teacher's soft targets "
                          "against the true labels and must lie between 0 and 1")
    if not temperature > 0:
        raise RecipeError(f"temperature = {temperature} is not allowed: it must be greater than 0 "
                          "(1 = the teacher's probabilities as they are, 2–4 = softer)")


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over positions of T² · KL(softmax(teacher/T) ‖ softmax(student/T)); logits are [N, V].

    Computed in float32; ``mask`` ([N] bool) selects the positions that count.
    """
    if student_logits.shape != teacher_logits.shape:
        raise RecipeError(f"the student predicts {tuple(student_logits.shape)} values but the teacher "
                          f"{tuple(teacher_logits.shape)}; they must share a tokenizer / label set")
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_position = (log_t.exp() * (log_t - log_s)).sum(dim=-1)
    if mask is not None:
        per_position = per_position[mask]
    if per_position.numel() == 0:
        return student_logits.sum() * 0.0
    return per_position.mean() * temperature ** 2


def hard_loss(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of [N, V] logits against [N] targets (``-100`` = not scored)."""
    if bool((targets != IGNORE_INDEX).any()):
        return F.cross_entropy(student_logits.float(), targets, ignore_index=IGNORE_INDEX)
    return student_logits.sum() * 0.0


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, targets: torch.Tensor,
                      alpha: float, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, soft, hard) for [N, V] logits and [N] targets; no teacher (or α = 0) means hard loss only.

    Positions whose target is ``-100`` count in neither term.
    """
    hard = hard_loss(student_logits, targets)
    if teacher_logits is None or alpha == 0.0:
        soft = torch.zeros((), device=student_logits.device)
        return hard, soft, hard
    soft = soft_loss(student_logits, teacher_logits, temperature, targets != IGNORE_INDEX)
    total = alpha * soft + (1.0 - alpha) * hard if alpha < 1.0 else soft
    return total, soft, hard


def causal_lm_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, input_ids: torch.Tensor,
                   alpha: float, temperature: float,
                   attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token distillation loss on [B, L, V] logits: position t is scored against token t + 1."""
    vocab = student_logits.shape[-1]
    targets = input_ids[:, 1:].clone()
    if attention_mask is not None:
        targets[attention_mask[:, 1:] == 0] = IGNORE_INDEX
    s = student_logits[:, :-1].reshape(-1, vocab)
    t = None if teacher_logits is None else teacher_logits[:, :-1].reshape(-1, teacher_logits.shape[-1])
    return distillation_loss(s, t, targets.reshape(-1), alpha, temperature)
