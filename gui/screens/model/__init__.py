"""The Model screen: choose a model (hub, folder, GGUF, bundled), see its summary and layers."""
