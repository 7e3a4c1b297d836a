"""The pages of the main window, one module per concern (model, placeholders, ...)."""
