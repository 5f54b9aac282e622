"""The checks config fields and command-line flags run on their values, each a ``ValueError`` naming the field."""

from __future__ import annotations

import math
import numbers

# Every seed, of training or sampling: what jax.random.key accepts on every backend and dtype setting.
SEED_RANGE = (0, 2 ** 32)
SEED_RANGE_TEXT = "[0, 2**32)"


def check_int(where: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: expected an integer >= {minimum}, got {value!r}")


def check_number(where: str, value, low: float = 0.0, high: float = math.inf, *, low_open: bool = False) -> None:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value > low if low_open else value >= low) and value <= high)
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{where}: expected a finite number {bound}"
                         f"{'' if high == math.inf else f' and <= {high}'}, got {value!r}")


def check_seed(where: str, value) -> None:
    """An integer seed in ``SEED_RANGE``."""
    low, high = SEED_RANGE
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value < high:
        raise ValueError(f"{where}: expected an integer seed in {SEED_RANGE_TEXT}, got {value!r}")
