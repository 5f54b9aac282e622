"""Variable-rate masking for training (Muse §2.6) and decoding schedules (§2.8).

Training masks ``⌈r·N⌉`` tokens, r from the arccos density ``2/π · (1 − r²)^(−1/2)``
(CDF ``1 − (2/π)·arccos(r)``, so ``r = cos(π/2 · u)``, mean 2/π): MaskGIT's cosine
schedule at a uniform random time. A schedule γ(ratio) is the fraction still masked.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

__all__ = ["SCHEDULES", "mask_schedule", "mask_tokens", "num_to_mask", "random_mask", "sample_mask_rate"]

# --------------------------------------------------------------------------
# Training: the arccos masking rate


def sample_mask_rate(key, shape=()) -> Float[Array, "..."]:
    """Masking rates ``r ∈ (0, 1]`` from the arccos density (§2.6), as ``cos(π/2 · u)``."""
    u = jax.random.uniform(key, shape)
    return jnp.cos(0.5 * jnp.pi * u)


def arccos_cdf(r):
    """The CDF of :func:`sample_mask_rate`: ``F(r) = 1 − (2/π)·arccos(r)`` on ``[0, 1]``."""
    r = jnp.clip(jnp.asarray(r, jnp.float32), 0.0, 1.0)
    return 1.0 - (2.0 / jnp.pi) * jnp.arccos(r)


def num_to_mask(rate, num_tokens: int):
    """``⌈rate·N⌉`` clipped to ``[1, N]`` — the number of tokens masked at ``rate``."""
    count = jnp.ceil(rate * num_tokens).astype(jnp.int32)
    return jnp.clip(count, 1, num_tokens)


def random_mask(key, num_tokens: int, rate) -> Bool[Array, " N"]:
    """Exactly ``⌈rate·N⌉`` (≥ 1) True entries, uniformly placed, for a traced ``rate``."""
    # The ranks of i.i.d. noise are a uniform permutation; the lowest ``count`` a uniform subset.
    noise_N = jax.random.uniform(key, (num_tokens,))
    rank_N = jnp.argsort(jnp.argsort(noise_N))
    return rank_N < num_to_mask(rate, num_tokens)


def mask_tokens(key, tokens_BxN: Int[Array, "B N"], mask_id: int):
    """``(inputs_BxN, mask_BxN)``: each row masked at its own arccos rate (§2.6), ``mask_id`` where masked."""
    batch, num_tokens = tokens_BxN.shape
    rate_key, pick_key = jax.random.split(key)
    rate_B = sample_mask_rate(rate_key, (batch,))
    mask_BxN = jax.vmap(random_mask, in_axes=(0, None, 0))(
        jax.random.split(pick_key, batch), num_tokens, rate_B
    )
    inputs_BxN = jnp.where(mask_BxN, jnp.asarray(mask_id, tokens_BxN.dtype), tokens_BxN)
    return inputs_BxN, mask_BxN


# --------------------------------------------------------------------------
# Inference: decoding schedules


def _cosine(r):
    return np.cos(0.5 * np.pi * r)


# ``log`` and ``exp`` are N-free variants of MaskGIT's: ``log`` reveals many
# tokens early (concave, like ``sqrt``), ``exp`` few early (convex, like ``square``).
_SCHEDULES = {
    "cosine": _cosine,
    "linear": lambda r: 1.0 - r,
    "square": lambda r: 1.0 - r**2,
    "cubic": lambda r: 1.0 - r**3,
    "sqrt": lambda r: 1.0 - np.sqrt(r),
    "log": lambda r: 1.0 - np.log2(1.0 + r),
    "exp": lambda r: 2.0 - np.exp2(r),
}
SCHEDULES: tuple[str, ...] = tuple(_SCHEDULES)


def _schedule_fn(name: str):
    if name not in _SCHEDULES:
        raise ValueError(f"mask schedule: unknown schedule {name!r}; expected one of {list(SCHEDULES)}")
    return _SCHEDULES[name]


def mask_schedule(name: str, ratio):
    """γ(ratio) on floats or NumPy arrays; ``cosine`` is the paper's (§2.8), the others compare."""
    fn = _schedule_fn(name)
    ratio = np.clip(np.asarray(ratio, np.float64), 0.0, 1.0)
    return np.clip(fn(ratio), 0.0, 1.0)


def masking_table(schedule: str, steps: int, num_tokens: int) -> np.ndarray:
    """Tokens still masked after each step: ``⌊N·γ((t+1)/steps)⌋``, at least one revealed per step, 0 at the end."""
    fn = _schedule_fn(schedule)
    if not 1 <= steps <= num_tokens:
        raise ValueError(
            f"masking_table: need 1 <= steps <= num_tokens to reveal a token per step, "
            f"got steps={steps}, num_tokens={num_tokens}"
        )
    table = np.zeros(steps, np.int32)
    still_masked = num_tokens
    for t in range(steps):
        target = math.floor(num_tokens * float(np.clip(fn((t + 1) / steps), 0.0, 1.0)) + 1e-9)
        steps_left = steps - 1 - t
        still_masked = max(min(target, still_masked - 1), steps_left)
        table[t] = still_masked
    return table


def num_masked_after_step(schedule: str, step, steps: int, num_tokens: int):
    """Entry ``step`` of :func:`masking_table`: an int, or an int32 array for a traced ``step``."""
    table = masking_table(schedule, steps, num_tokens)
    if isinstance(step, (int, np.integer)):
        return int(table[step])
    return jnp.asarray(table)[step]
