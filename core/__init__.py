"""LLM Compression Studio engine: models, data, evaluation, recipes and techniques.

This package never imports Qt; the desktop application in ``gui`` is built on top of it, and the
command line in ``core.cli`` drives the very same code headless.

Its sub-packages are layers; each imports only those below it (import-linter checks it)::

    cli → history → engine → io → eval → models → data

``techniques`` sits beside them (it uses the engine's registry and calibration loop, the models and
the data, never the runner, the history or the command line).  ``errors``, ``events``, ``paths``,
``background`` and ``partials`` are the foundation every layer uses.
"""

__version__ = "0.1.0"
