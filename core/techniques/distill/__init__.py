"""Knowledge distillation: a student learns to imitate a teacher (soft targets) and the data (hard labels)."""
