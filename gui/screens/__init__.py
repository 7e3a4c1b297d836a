"""The six screens of the main window, one sub-package each, in the order a person uses them."""
