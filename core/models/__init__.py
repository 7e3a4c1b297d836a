"""Models: finding, loading and describing them, and changing their modules in place.

``loading`` reads a hub id (``hub``, ``hub_search``), a folder, a .gguf file or a ``bundled`` model,
with tokenizers from ``tokenizer_pool``; ``formats`` knows the saved formats the techniques register;
``model_info`` measures sizes the three honest ways; ``module_swap`` and ``memory`` replace layers and
hand memory back; ``devices`` lists the CPU and GPUs.  Imports no other core sub-package but data.
"""
