"""Variable-rate masking for training and decoding schedules for inference (Muse §2.6, §2.8).

Training (§2.6). Each example draws a masking rate ``r`` from the truncated
arccos distribution on ``[0, 1]``::

    p(r) = 2/π · (1 − r²)^(−1/2)
    F(r) = ∫₀ʳ p = (2/π) · arcsin(r) = 1 − (2/π) · arccos(r)

Inverting ``F(r) = v`` gives ``r = sin(π/2 · v)``; since ``1 − v`` is uniform
when ``v`` is, ``r = cos(π/2 · u)`` with ``u ~ U[0, 1)`` has the same law (this
is MaskGIT's cosine schedule evaluated at a uniform random time, which is why
training and the cosine decoding schedule match). The mean is
``∫ r p(r) dr = (2/π)·[−√(1 − r²)]₀¹ = 2/π ≈ 0.64``, biased towards high rates.
Then exactly ``⌈r·N⌉`` of the N tokens (at least one, so every example has a
loss term) are replaced by ``[MASK]``, chosen uniformly without replacement.

Inference (§2.8). A schedule ``γ(ratio)`` gives the fraction of tokens still
masked at progress ``ratio ∈ [0, 1]``: ``γ(0) = 1``, ``γ(1) = 0``, non-increasing.
:func:`masking_table` turns it into integer counts per decoding step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

# --------------------------------------------------------------------------
# Training: the arccos masking rate


def sample_mask_rate(key, shape=()) -> Float[Array, "..."]:
    """Draw masking rates ``r ∈ (0, 1]`` from ``p(r) = 2/π (1 − r²)^(−1/2)`` (§2.6).

    Inverse-CDF sampling: ``r = cos(π/2 · u)``, ``u ~ U[0, 1)`` (derivation in
    the module docstring). The mean is ``2/π ≈ 0.64``.
    """
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
    """A boolean mask with exactly ``⌈rate·N⌉`` (≥ 1) True entries, uniformly placed.

    The rank of i.i.d. uniform noise is a uniformly random permutation, so
    taking the positions whose rank is below the count picks a uniform subset
    of that size — with a traced ``rate``, unlike ``jax.random.choice``.
    """
    noise_N = jax.random.uniform(key, (num_tokens,))
    rank_N = jnp.argsort(jnp.argsort(noise_N))
    return rank_N < num_to_mask(rate, num_tokens)


def mask_tokens(key, tokens_BxN: Int[Array, "B N"], mask_id: int):
    """Mask each row of ``tokens_BxN`` at its own arccos-distributed rate (§2.6).

    Returns ``(inputs_BxN, mask_BxN)``: the inputs have ``mask_id`` where
    ``mask_BxN`` is True and the original tokens elsewhere.
    """
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
    """Fraction of tokens still masked at decoding progress ``ratio ∈ [0, 1]``.

    ``cosine`` (``cos(π/2·ratio)``) is the paper's (§2.8, after MaskGIT); the
    others are for comparison. Every schedule is 1 at 0, 0 at 1, non-increasing.
    Works on floats and NumPy arrays (schedules are evaluated ahead of the
    decoding loop, see :func:`masking_table`).
    """
    fn = _schedule_fn(name)
    ratio = np.clip(np.asarray(ratio, np.float64), 0.0, 1.0)
    return np.clip(fn(ratio), 0.0, 1.0)


def masking_table(schedule: str, steps: int, num_tokens: int) -> np.ndarray:
    """Tokens still masked after each of ``steps`` decoding steps, as an int array.

    Entry ``t`` is ``⌊N·γ((t+1)/steps)⌋``, adjusted so that every step reveals
    at least one token (strictly decreasing) while leaving at least one token
    for each remaining step; the last entry is 0. Needs ``1 ≤ steps ≤ N``.
    """
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
    """Tokens still masked after decoding step ``step`` (0-based) of ``steps``.

    ``steps`` and ``num_tokens`` are Python ints; ``step`` may be an int (gives
    an int) or a traced integer inside a ``jax.lax`` loop (gives an int32 array).
    """
    table = masking_table(schedule, steps, num_tokens)
    if isinstance(step, (int, np.integer)):
        return int(table[step])
    return jnp.asarray(table)[step]
