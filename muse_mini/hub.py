"""Whether the Hugging Face hub may be reached: one offline check that every loader shares.

``huggingface_hub``, ``datasets`` and ``transformers`` each read their offline
flags once, at import. This reads them now, so a flag set later (a notebook
cell, a test) is still seen. ``HF_HUB_OFFLINE`` applies to every loader; each
library adds its own flag, and the value it read at import.
"""

from __future__ import annotations

import os

HUB_PROBE_TIMEOUT_S = 5.0  # a reachable hub answers in well under a second


def hub_offline(*library_flags: str, read_at_import: bool = False) -> bool:
    """True when ``HF_HUB_OFFLINE`` or one of ``library_flags`` is set now, or ``read_at_import`` is."""
    flags = (os.environ.get(name, "").strip().upper() for name in ("HF_HUB_OFFLINE", *library_flags))
    return read_at_import or any(flag in ("1", "ON", "YES", "TRUE") for flag in flags)
