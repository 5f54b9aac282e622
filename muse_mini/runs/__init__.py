"""Run directories on disk: checkpoint files, model weights, and what each stage wrote."""
