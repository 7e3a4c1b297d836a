"""The names of the perplexity conventions (kept free of torch, so recipes and the GUI can list them).

What each one means is in :mod:`core.data.perplexity_windows`.
"""

CONVENTIONS = ("transformers", "lm-eval", "llama.cpp")
