"""Shape checks before any weights load: each step's ``check_model`` on the model's skeleton.

A step config may define ``check_model(model)``, which raises RecipeError when its settings cannot
work on that model's layer shapes (a group size that does not divide a layer's width, more layers to
drop than there are, …).  Those checks read shapes and the config only, so they run on the skeleton
(:mod:`core.models.skeleton`: the layers on the meta device, no weights) in the first second of a run,
not after minutes of loading.

Every enabled step is checked as long as the steps before it keep every layer's shape (quantization
and pruning to zeros do); the first step that changes shapes (structured pruning, low-rank, layer
dropping, sharing, distillation into a smaller student) ends the checks here — later steps see a
changed model and check it themselves when they run.
"""

from __future__ import annotations

from core.engine.recipe import Recipe
from core.engine.registry import get_technique
from core.errors import RecipeError
from core.models.skeleton import model_skeleton

SHAPE_KEEPING_FAMILIES = {"quantization"}
SHAPE_KEEPING_TECHNIQUES = {"magnitude_prune", "wanda_prune", "sparsegpt_prune"}  # zeros, same shapes


def keeps_shapes(technique: str) -> bool:
    """Whether a step leaves every layer's shape as it was (so the next step can be checked on the same skeleton)."""
    return technique in SHAPE_KEEPING_TECHNIQUES or get_technique(technique).family in SHAPE_KEEPING_FAMILIES


def check_shapes_before_loading(recipe: Recipe) -> bool:
    """Run the steps' shape checks on the source's skeleton; True when they ran, False without a skeleton.

    Raises RecipeError naming the step: "step 1 (GPTQ quantization): model.layers.0.mlp.down_proj has
    1536 inputs, which group size 96 does not divide …".
    """
    steps = recipe.enabled_steps()
    if not any(callable(getattr(step.config, "check_model", None)) for _, step in steps):
        return False  # nothing to check: do not spend the config read
    skeleton = model_skeleton(recipe.model.source, recipe.model.task, recipe.model.trust_remote_code)
    if skeleton is None:
        return False
    for index, step in steps:
        check = getattr(step.config, "check_model", None)
        if callable(check):
            try:
                check(skeleton)
            except RecipeError as exc:
                title = get_technique(step.technique).title
                raise RecipeError(f"step {index + 1} ({title}): {exc}") from None
        if not keeps_shapes(step.technique):
            break
    return True
