"""Quantization techniques."""
