"""Data: the Shapes toy world, its caption evaluator, and Hugging Face ``datasets`` sources."""
