"""The checks every config field runs on its value, each a ``ValueError`` naming the field.

They run in the dataclasses' ``__post_init__`` (:mod:`muse_mini.config.schema`)
and on command-line flags such as ``sample --seed``, so bad input fails before
JAX sees it.
"""

from __future__ import annotations

import math

# jax.random.key takes a signed 64-bit seed.
SEED_RANGE = (-(2 ** 63), 2 ** 63)


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
    """Raise unless ``value`` is an integer seed that ``jax.random.key`` accepts (signed 64 bits)."""
    low, high = SEED_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
        raise ValueError(f"{where}: expected an integer seed in [-2**63, 2**63), got {value!r}")
