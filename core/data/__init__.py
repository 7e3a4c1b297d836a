"""Data: the texts and labelled rows a run reads (``texts``) and the bundled samples (``samples``).

The lowest layer of the engine: it imports nothing else of core but errors, events and paths.
"""
