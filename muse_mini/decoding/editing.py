"""Image editing with the same model and sampler (Muse §3.3).

Because the model was trained to predict any masked subset of tokens (§2.6),
editing needs no new training:

- **Inpainting / outpainting** (§3.3.1): mask the tokens of a region (or of
  everything outside it) and run the ordinary sampler
  (:func:`muse_mini.decoding.sampler.decode`) from that state; unmasked tokens stay fixed.
  :func:`inpaint_state` / :func:`outpaint_state` build that state.
- **Mask-free editing** (§3.3.2): starting from an image's tokens, repeatedly
  mask a random subset (8% in the paper) and resample it under the new prompt
  with top-k (k = 3), a Gibbs-like walk towards the prompt's typical set. The
  paper runs 100 iterations at guidance 4 (constant guidance; the
  ``step`` given to ``logits_fn`` is the iteration index).
"""

from __future__ import annotations

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.decoding import sampler as sampler_lib


def inpaint_state(tokens_BxN, region_mask_BxN, mask_id: int):
    """``(tokens, mask)`` for :func:`~muse_mini.decoding.sampler.decode`: regenerate ``region_mask``.

    Positions outside the region keep their tokens and are never re-masked.
    One ``(N,)`` mask (what :func:`pixel_mask_to_token_mask` gives for one
    ``H×W`` mask) is shared by every example of the batch.
    """
    region_mask_BxN = _batch_mask(tokens_BxN, region_mask_BxN)
    sampler_lib.check_tokens(tokens_BxN, region_mask_BxN)
    state = sampler_lib.init_state(tokens_BxN, region_mask_BxN, mask_id)
    return state.tokens_BxN, state.mask_BxN


def outpaint_state(tokens_BxN, keep_mask_BxN, mask_id: int):
    """``(tokens, mask)`` that keep the ``keep_mask`` region and generate everything else.

    To extend an image, place its tokens in a larger token map and keep only
    those positions (the rest of ``tokens`` may hold anything).
    """
    keep_mask_BxN = _batch_mask(tokens_BxN, keep_mask_BxN)
    sampler_lib.check_tokens(tokens_BxN, keep_mask_BxN)
    return inpaint_state(tokens_BxN, ~jnp.asarray(keep_mask_BxN), mask_id)


def _batch_mask(tokens_BxN, mask):
    """A ``(N,)`` mask broadcast over the batch of ``tokens_BxN``; other shapes are left to the checks."""
    if jnp.ndim(mask) == 1 and jnp.ndim(tokens_BxN) == 2 and jnp.shape(mask)[0] == jnp.shape(tokens_BxN)[1]:
        return jnp.broadcast_to(jnp.asarray(mask), jnp.shape(tokens_BxN))
    return mask


def pixel_mask_to_token_mask(mask_HxW, grid: int, *, image_size: int | None = None, reduce="any"):
    """A boolean pixel mask (``HxW`` or ``BxHxW``) → a token mask (``N`` or ``BxN``, N = grid²).

    A token covers an ``(H/grid)×(W/grid)`` patch; with ``reduce="any"`` it is
    masked when any pixel of its patch is (covers the whole region, the safe
    choice for inpainting), with ``"all"`` only when every pixel is. Token order
    is row-major, as in the tokenizer's flattened grid.
    """
    mask = np.asarray(mask_HxW)
    if reduce not in ("any", "all"):
        raise ValueError(f"reduce: expected 'any' or 'all', got {reduce!r}")
    if isinstance(grid, bool) or not isinstance(grid, numbers.Integral) or grid < 1:
        raise ValueError(f"grid: expected an integer >= 1, got {grid!r}")
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask: expected shape (H, W) or (B, H, W), got {mask.shape}")
    H, W = mask.shape[-2:]
    if image_size is not None and (H, W) != (image_size, image_size):
        raise ValueError(
            f"mask: shape (H, W) = {(H, W)} does not match the image size {image_size}×{image_size}"
        )
    if H % grid or W % grid or H == 0:
        raise ValueError(
            f"mask: shape (H, W) = {(H, W)} is not divisible into a {grid}×{grid} token grid"
        )
    patches = mask.astype(bool).reshape(*mask.shape[:-2], grid, H // grid, grid, W // grid)
    reduced = patches.any(axis=(-3, -1)) if reduce == "any" else patches.all(axis=(-3, -1))
    return jnp.asarray(reduced.reshape(*mask.shape[:-2], grid * grid))


class EditTrajectory(eqx.Module):
    """The token maps after every mask-free editing iteration (I = iterations)."""

    tokens_BxIxN: jax.Array
    resampled_BxIxN: jax.Array  # the positions masked and resampled at iteration i
    tokens_BxN: jax.Array


def check_walk(iterations, resample_fraction, temperature=1.0) -> None:
    """The host-side checks of :func:`mask_free_edit`'s settings, each naming its argument."""
    sampler_lib.check_steps(iterations, "iterations")
    sampler_lib.check_real("temperature", temperature, low=0.0, strict=True)
    sampler_lib.check_real("resample_fraction", resample_fraction, low=0.0, strict=True)
    if float(resample_fraction) > 1:
        raise ValueError(f"resample_fraction: expected a value in (0, 1], got {resample_fraction!r}")


def mask_free_edit(
    logits_fn,
    tokens_BxN,
    *,
    key,
    iterations: int,
    mask_id: int,
    resample_fraction: float = 0.08,
    top_k: int | None = 3,
    temperature=1.0,
) -> EditTrajectory:
    """Zero-shot mask-free editing (Muse §3.3.2), one compiled ``lax.scan``.

    Each iteration masks ``max(1, round(resample_fraction · N))`` positions chosen
    uniformly at random per example, asks ``logits_fn(masked_tokens, i)`` for
    their distribution, and resamples them with ``top_k`` and ``temperature``
    (the same sampling as :func:`muse_mini.decoding.sampler.decode`).
    """
    check_walk(iterations, resample_fraction, temperature)
    sampler_lib.check_tokens(tokens_BxN)
    sampler_lib.check_key(key)
    V = sampler_lib.logits_width(logits_fn, tokens_BxN)
    sampler_lib.check_top_k(top_k, min(V, mask_id))

    B, N = jnp.shape(tokens_BxN)
    num_resampled = max(1, round(float(resample_fraction) * N))

    def body(tokens_BxN, i):
        # One draw per iteration: V columns to sample with, one to choose positions.
        gumbel_BxNxV1 = jax.random.gumbel(jax.random.fold_in(key, i), (B, N, V + 1))
        # The lowest ranks of i.i.d. noise form a uniformly random subset.
        rank_BxN = jnp.argsort(jnp.argsort(gumbel_BxNxV1[..., V], axis=-1), axis=-1)
        chosen_BxN = rank_BxN < num_resampled
        masked_BxN = jnp.where(chosen_BxN, mask_id, tokens_BxN)
        logits_BxNxV = sampler_lib.predict_logits(logits_fn, masked_BxN, i, mask_id)
        sampled_BxN = sampler_lib.sample_tokens(
            logits_BxNxV, gumbel_BxNxV1[..., :V], temperature=temperature, top_k=top_k
        )
        tokens_BxN = jnp.where(chosen_BxN, sampled_BxN, tokens_BxN)
        return tokens_BxN, (tokens_BxN, chosen_BxN)

    tokens_BxN = jnp.asarray(tokens_BxN, jnp.int32)
    final_BxN, (tokens_IxBxN, chosen_IxBxN) = jax.lax.scan(
        body, tokens_BxN, jnp.arange(iterations, dtype=jnp.int32)
    )
    return EditTrajectory(
        tokens_BxIxN=jnp.swapaxes(tokens_IxBxN, 0, 1),
        resampled_BxIxN=jnp.swapaxes(chosen_IxBxN, 0, 1),
        tokens_BxN=final_BxN,
    )
