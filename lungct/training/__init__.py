"""Training, distillation and experiment tracking (one loop for every model)."""
