"""LLM Compression Studio engine: models, data, evaluation, recipes and techniques.

This package never imports Qt; the desktop application in ``gui`` is built on top of it,
and the command line in ``core.cli.commands`` drives the very same code headless.
"""

__version__ = "0.1.0"
