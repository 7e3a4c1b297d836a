"""LLM Compression Studio desktop application (PySide6), built on the Qt-free engine in ``core``.

Importing this package (and ``gui.app`` / ``gui.main_window``) must stay fast: nothing here may
import torch or transformers at module level.  Engine modules that pull them in are imported
inside functions, after the window is on screen.
"""
