"""Layer sharing techniques."""
