"""The engine: a recipe becomes a job that yields events and returns a report.

``recipe`` (what to do, validated up front with ``params``) → ``runner`` (load, measure, run each step
found through ``registry``, measure, save) → events (``core.events``) the CLI prints and the app plots.
``calibration`` is the one block-by-block loop every data-aware technique runs through (``targets``
picks its Linears); ``eta`` estimates the time left.  It sits above models, io, data and eval and
below the history and the command line.
"""
