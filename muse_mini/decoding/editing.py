"""Editing at the token level (Muse §3.3): pixel masks to token masks, and the mask-free walk.

In- and outpainting (§3.3.1) need nothing more: the sampler keeps unmasked tokens.
The walk (§3.3.2) resamples a random subset of the tokens under the new prompt.
"""

from __future__ import annotations

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.decoding.sampler import check_tokens, logits_width, predict_logits, sample_tokens
from muse_mini.decoding.spec import check_key, check_real, check_steps, check_top_k

__all__ = ["EditTrajectory", "pixel_mask_to_token_mask"]


def pixel_mask_to_token_mask(mask_HxW, grid: int, *, image_size: int | None = None, reduce="any"):
    """A pixel mask (``HxW``/``BxHxW``) → a row-major token mask (``N``/``BxN``): a token is masked when
    any (``reduce="any"``, covering the region) or every pixel of its patch is."""
    mask = np.asarray(mask_HxW)
    if reduce not in ("any", "all"):
        raise ValueError(f"reduce: expected 'any' or 'all', got {reduce!r}")
    if isinstance(grid, bool) or not isinstance(grid, numbers.Integral) or grid < 1:
        raise ValueError(f"grid: expected an integer >= 1, got {grid!r}")
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask: expected shape (H, W) or (B, H, W), got {mask.shape}")
    H, W = mask.shape[-2:]
    if image_size is not None and (H, W) != (image_size, image_size):
        raise ValueError(f"mask: shape (H, W) = {(H, W)} does not match the image size {image_size}×{image_size}")
    if H % grid or W % grid or H == 0:
        raise ValueError(f"mask: shape (H, W) = {(H, W)} is not divisible into a {grid}×{grid} token grid")
    patches = mask.astype(bool).reshape(*mask.shape[:-2], grid, H // grid, grid, W // grid)
    reduced = patches.any(axis=(-3, -1)) if reduce == "any" else patches.all(axis=(-3, -1))
    return jnp.asarray(reduced.reshape(*mask.shape[:-2], grid * grid))


class EditTrajectory(eqx.Module):
    """The token maps after every mask-free editing iteration (I = iterations)."""

    tokens_BxIxN: jax.Array
    resampled_BxIxN: jax.Array  # the positions masked and resampled at iteration i
    tokens_BxN: jax.Array


def check_walk(iterations, resample_fraction, temperature=1.0) -> None:
    """:func:`mask_free_edit`'s settings, each error naming its argument."""
    check_steps(iterations, "iterations")
    check_real("temperature", temperature, low=0.0, strict=True)
    check_real("resample_fraction", resample_fraction, low=0.0, strict=True)
    if float(resample_fraction) > 1:
        raise ValueError(f"resample_fraction: expected a value in (0, 1], got {resample_fraction!r}")


def mask_free_edit(logits_fn, tokens_BxN, *, key, iterations: int, mask_id: int, resample_fraction: float = 0.08,
                   top_k: int | None = 3, temperature=1.0) -> EditTrajectory:
    """Mask-free editing (§3.3.2) in one ``lax.scan``: each iteration i resamples
    ``max(1, round(resample_fraction · N))`` random positions from ``logits_fn(masked, i)``."""
    check_walk(iterations, resample_fraction, temperature)
    check_tokens(tokens_BxN)
    check_key(key)
    V = logits_width(logits_fn, tokens_BxN)
    check_top_k(top_k, min(V, mask_id))

    B, N = jnp.shape(tokens_BxN)
    num_resampled = max(1, round(float(resample_fraction) * N))

    def body(tokens_BxN, i):
        # One draw per iteration: V columns to sample with, one to choose positions.
        gumbel_BxNxV1 = jax.random.gumbel(jax.random.fold_in(key, i), (B, N, V + 1))
        # The lowest ranks of i.i.d. noise form a uniformly random subset.
        rank_BxN = jnp.argsort(jnp.argsort(gumbel_BxNxV1[..., V], axis=-1), axis=-1)
        chosen_BxN = rank_BxN < num_resampled
        masked_BxN = jnp.where(chosen_BxN, mask_id, tokens_BxN)
        logits_BxNxV = predict_logits(logits_fn, masked_BxN, i, mask_id)
        sampled_BxN = sample_tokens(logits_BxNxV, gumbel_BxNxV1[..., :V], temperature=temperature, top_k=top_k)
        tokens_BxN = jnp.where(chosen_BxN, sampled_BxN, tokens_BxN)
        return tokens_BxN, (tokens_BxN, chosen_BxN)

    tokens_BxN = jnp.asarray(tokens_BxN, jnp.int32)
    final_BxN, (tokens_IxBxN, chosen_IxBxN) = jax.lax.scan(body, tokens_BxN, jnp.arange(iterations, dtype=jnp.int32))
    return EditTrajectory(jnp.swapaxes(tokens_IxBxN, 0, 1), jnp.swapaxes(chosen_IxBxN, 0, 1), final_BxN)
