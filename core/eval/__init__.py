"""Measuring models the way the field does: perplexity, classification metrics, speed, the
side-by-side comparison of teacher and student, the playground, and the Pareto front of runs."""
