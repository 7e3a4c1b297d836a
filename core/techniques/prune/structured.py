"""Structured pruning, one import for its public API: MLP neurons, key/value head groups, whole layers.

Unlike the mask-based methods, these change tensor shapes: the saved file is smaller, every
forward pass does less work, and the result is still a plain transformers model (only sizes in
its config change).  The code lives in one module per concern:

* :mod:`~core.techniques.prune.slicing` — slice Linears, rank, count parameters;
* :mod:`~core.techniques.prune.mlp_neurons` — ``mlp_prune`` and :func:`keep_mlp_neurons`;
* :mod:`~core.techniques.prune.kv_groups` — ``attention_prune`` and :func:`keep_kv_groups`;
* :mod:`~core.techniques.prune.layer_drop` — ``layer_drop`` and :func:`drop_blocks`.

The ``keep_*`` / ``drop_blocks`` functions apply explicit choices to a model object without any
calibration (e.g. to build a distillation student from a copy of the teacher); the registered
steps rank by calibration data and then call the same slicing code.
"""

from core.techniques.prune.kv_groups import (
    AttentionPruneConfig,
    apply_attention_prune,
    attention_shape,
    keep_kv_groups,
    kv_group_scores,
)
from core.techniques.prune.layer_drop import (
    LayerDropConfig,
    apply_layer_drop,
    block_influence,
    drop_blocks,
    measure_block_influence,
)
from core.techniques.prune.mlp_neurons import (
    MLPPruneConfig,
    apply_mlp_prune,
    intermediate_size,
    keep_mlp_neurons,
    kept_width,
)
from core.techniques.prune.slicing import (
    STRUCTURED_NOTES,
    keep_columns,
    keep_rows,
    neuron_scores,
    parameter_count,
    top_neurons,
)

__all__ = [
    "STRUCTURED_NOTES", "AttentionPruneConfig", "LayerDropConfig", "MLPPruneConfig", "apply_attention_prune",
    "apply_layer_drop", "apply_mlp_prune", "attention_shape", "block_influence", "drop_blocks",
    "intermediate_size", "keep_columns", "keep_kv_groups", "keep_mlp_neurons", "keep_rows", "kept_width",
    "kv_group_scores", "measure_block_influence", "neuron_scores", "parameter_count", "top_neurons",
]
