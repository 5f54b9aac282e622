"""Keys and batch order: update ``s`` draws ``step_key(seed, s)`` and reads batch ``s``, so a
resumed run repeats exactly what an uninterrupted one would (:mod:`muse_mini.training.loop`)."""

from __future__ import annotations

import functools

import jax
import numpy as np

__all__ = ["base_key", "step_key", "init_key", "epoch_batch_indices"]


def base_key(seed: int) -> jax.Array:
    # raw uint32, so it serialises like any array
    return jax.random.PRNGKey(seed)


def step_key(seed: int, step: int) -> jax.Array:
    """The key of update ``step``: ``fold_in(base_key(seed), step)``, so resuming needs no PRNG state."""
    return jax.random.fold_in(base_key(seed), step)


def init_key(seed: int) -> jax.Array:
    """A key for model initialisation, independent of every `step_key`."""
    return jax.random.split(base_key(seed))[1]


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.flags.writeable = False  # it is cached; nobody may mutate it
    return perm


def epoch_batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices of batch ``step``: epoch ``e`` is ``default_rng([seed, e]).permutation(n)``,
    cut into ``n // batch_size`` batches (the remainder dropped: one shape, one compile)."""
    if not 0 < batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n={n}], got {batch_size}")
    per_epoch = n // batch_size
    epoch, i = divmod(int(step), per_epoch)
    return _epoch_permutation(n, seed, epoch)[i * batch_size : (i + 1) * batch_size].copy()
