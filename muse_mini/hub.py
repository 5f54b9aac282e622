"""Whether the Hugging Face hub may be reached: the one offline switch every loader obeys.

``huggingface_hub``, ``datasets`` and ``transformers`` each read their offline
flags once, at import; this reads them now, so a flag set later (a notebook
cell, a test) is still seen, and the text encoder, the perceptual weights and
the data sources agree on it.
"""

from __future__ import annotations

import os

OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
HUB_PROBE_TIMEOUT_S = 5.0  # a reachable hub answers in well under a second


def hub_offline() -> bool:
    """True when any of :data:`OFFLINE_FLAGS` is set, now or when ``huggingface_hub`` was imported."""
    flags = (os.environ.get(name, "").strip().upper() for name in OFFLINE_FLAGS)
    if any(flag in ("1", "ON", "YES", "TRUE") for flag in flags):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)
