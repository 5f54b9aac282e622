"""Training: the resumable loop and its hooks, optimisers, losses, and one module per stage."""
