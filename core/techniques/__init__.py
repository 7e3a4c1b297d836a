"""Compression techniques.  Each module registers itself with ``core.registry.register``."""
