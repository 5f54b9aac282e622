"""Keys and batch order: every update's randomness and data are functions of ``(seed, step)``.

Update number ``s`` (0-based) consumes ``batch_fn(s)`` and the key
``step_key(seed, s)``, so a checkpoint needs only the state and the step
counter, and a resumed run draws exactly the keys and batches an
uninterrupted one would (:mod:`muse_mini.training.loop`).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

__all__ = ["base_key", "step_key", "init_key", "epoch_batch_indices"]


def base_key(seed: int) -> jax.Array:
    """The run's root key (raw uint32, so it serialises like any array)."""
    return jax.random.PRNGKey(seed)


def step_key(seed: int, step: int) -> jax.Array:
    """The key of update ``step``: ``fold_in(base_key(seed), step)``.

    Folding in the step (rather than carrying a key in the state and splitting it)
    makes the randomness of every update a function of ``(seed, step)`` alone, so
    resuming needs no PRNG state and any single step can be reproduced in isolation.
    """
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
    """Example indices of batch ``step``: epochs are fresh permutations of ``range(n)``.

    Epoch ``e`` uses ``np.random.default_rng([seed, e]).permutation(n)``; each epoch
    has ``n // batch_size`` batches (the ragged remainder is dropped so every batch
    has the same shape and the step function compiles once).
    """
    if not 0 < batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n={n}], got {batch_size}")
    per_epoch = n // batch_size
    epoch, i = divmod(int(step), per_epoch)
    return _epoch_permutation(n, seed, epoch)[i * batch_size : (i + 1) * batch_size].copy()
