"""Whether the Hugging Face hub may be reached: one offline check that every loader shares.

The libraries read their offline flags once, at import; this reads them now, so a flag set later is seen.
"""

from __future__ import annotations

import os

HUB_PROBE_TIMEOUT_S = 5.0  # a reachable hub answers in well under a second


def hub_offline(*library_flags: str, read_at_import: bool = False) -> bool:
    """True when ``HF_HUB_OFFLINE`` or one of ``library_flags`` is set now, or ``read_at_import`` is."""
    flags = (os.environ.get(name, "").strip().upper() for name in ("HF_HUB_OFFLINE", *library_flags))
    return read_at_import or any(flag in ("1", "ON", "YES", "TRUE") for flag in flags)
