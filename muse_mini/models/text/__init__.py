"""Frozen text encoders (Muse §2.1): T5 and BERT-family encoders in Equinox, loaded from safetensors."""
