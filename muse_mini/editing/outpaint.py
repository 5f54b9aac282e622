"""Outpainting past the frame (Muse §3.3.1), window by window.

The output is larger than anything the model was trained on, so the canvas is
generated in windows of the model's size, each overlapping what is known by
at least half its width: known tokens stay fixed, the rest are generated. The
token canvas is decoded whole (the decoder is convolutional), with no seams.
With super-res the same windows run at high resolution, each conditioned on
its low-res window. Outpainting inside the frame is inpainting of the complement.
"""

from __future__ import annotations

import jax
import numpy as np

from muse_mini.config import SamplerConfig
from muse_mini.decoding.guidance import decode_guided, superres_pass
from muse_mini.editing.inputs import EditBatch
from muse_mini.editing.methods import EditModels, EditResult, flat_tokens
from muse_mini.models.codec import decode_tokens


def window_starts(total: int, window: int, toward_end: bool, *, cover_all: bool = False) -> list[int]:
    """Window offsets along the extended axis, nearest the known part first, overlapping by half a window
    or more; ``cover_all`` also takes the window over the known part (super-res regenerates it all)."""
    stride = max(1, window // 2)
    starts = list(range(0 if cover_all else stride, total - window, stride)) + [total - window]
    starts = sorted(set(s for s in starts if s >= 0))
    return starts if toward_end else [total - window - s for s in starts]


def _fill_windows(model, canvas, known, starts, axis: int, window: int, context, uncond, key, sampler,
                  condition=None):
    """Generate the unknown tokens of ``canvas`` (B, h, w) window by window; returns the trajectories."""
    trajectories = []
    for i, start in enumerate(starts):
        index = [slice(None)] * 3
        index[axis + 1] = slice(start, start + window)
        index = tuple(index)
        win_known = known[index[1:]]
        if win_known.all():
            continue
        tokens = canvas[index].reshape(len(canvas), -1)
        mask = np.broadcast_to(~win_known.reshape(-1), tokens.shape)
        win_key = jax.random.fold_in(key, i)
        if condition is None:
            traj = decode_guided(model, context, uncond, win_key, sampler, tokens_BxN=tokens, mask_BxN=mask)
        else:
            traj = condition(start, tokens, mask, win_key)
        canvas[index] = np.asarray(traj.tokens_BxN).reshape(canvas[index].shape)
        known[index[1:]] = True
        trajectories.append(traj)
    return trajectories


def outpaint(models: EditModels, batch: EditBatch, contexts, *, key, extend: str, by: int, stage: str,
             sampler: SamplerConfig, superres_sampler: SamplerConfig, paste_back: bool = False) -> EditResult:
    """Extend each image ``by`` pixels (of its size) towards ``extend`` (§3.3.1); the input's tokens stay."""
    images = batch.images
    side, low = images.shape[1], models.tokenizer.image_size
    grid, patch = models.tokenizer.grid, low // models.tokenizer.grid
    scale = side // low  # by is in the input's pixels
    by_tokens = -(-by // (scale * patch))
    axis = 1 if extend in ("left", "right") else 0
    toward_end = extend in ("right", "down")
    shape, origin = [grid, grid], [0, 0]
    shape[axis] += by_tokens
    if not toward_end:
        origin[axis] = by_tokens
    cells = (slice(origin[0], origin[0] + grid), slice(origin[1], origin[1] + grid))  # the input's tokens

    batch_size = len(images)
    canvas = np.zeros((batch_size, *shape), np.int32)
    known = np.zeros(shape, bool)
    canvas[(slice(None), *cells)] = flat_tokens(models.tokenizer, models.to_base_size(images)).reshape(
        batch_size, grid, grid)
    known[cells] = True
    generated = ~known  # before the windows fill it in
    context, uncond = contexts
    key_base, key_sr = jax.random.split(key)
    starts = window_starts(shape[axis], grid, toward_end)
    base_trajs = _fill_windows(models.base, canvas, known, starts, axis, grid, context, uncond, key_base, sampler)
    base_images = decode_tokens(models.tokenizer, canvas)
    token_mask = np.broadcast_to(generated, (batch_size, *shape)).reshape(batch_size, -1)
    result = EditResult(base_images, batch.prompts, base_images, base_trajs, token_mask, tokenizer=models.tokenizer)
    result.base_images = result.images = _crop(base_images, -(-by // scale), axis, toward_end, low)
    if stage == "superres":
        high = models.highres_tokenizer.image_size
        result.superres_trajectory, hr_images = _superres_windows(
            models, canvas, images if scale > 1 else None, cells, axis, toward_end, context, key_sr, superres_sampler)
        result.images = _crop(hr_images, by * high // side, axis, toward_end, high)
    if paste_back:
        result.base_images = _paste_input(result.base_images, models.to_base_size(images), axis, toward_end)
        result.images = result.base_images if stage == "base" else _paste_input(result.images, images, axis,
                                                                                 toward_end)
    return result


def _paste_input(canvas: np.ndarray, images: np.ndarray, axis: int, toward_end: bool) -> np.ndarray:
    """``canvas`` with the input's own pixels where the input lies (its first or last side along ``axis``)."""
    out, side = canvas.copy(), images.shape[1]
    index = slice(0, side) if toward_end else slice(canvas.shape[axis + 1] - side, None)
    if axis == 0:
        out[:, index] = images
    else:
        out[:, :, index] = images
    return out


def _superres_windows(models, canvas, highres_images, cells, axis, toward_end, context, key, sampler):
    """Super-res over the whole low-res canvas, in overlapping windows; a high-res input keeps its tokens."""
    grid = models.tokenizer.grid
    hr_grid = models.highres_tokenizer.grid
    ratio = hr_grid // grid
    batch = len(canvas)
    hr_shape = [n * ratio for n in canvas.shape[1:]]
    hr_canvas = np.zeros((batch, *hr_shape), np.int32)
    hr_known = np.zeros(hr_shape, bool)
    if highres_images is not None:
        hr_cells = tuple(slice(s.start * ratio, s.stop * ratio) for s in cells)
        hr_canvas[(slice(None), *hr_cells)] = flat_tokens(models.highres_tokenizer, highres_images).reshape(
            batch, hr_grid, hr_grid)
        hr_known[hr_cells] = True

    def condition(hr_start, tokens, mask, win_key):
        start = hr_start // ratio
        index = [slice(None), slice(None), slice(None)]
        index[axis + 1] = slice(start, start + grid)
        low_tokens = canvas[tuple(index)].reshape(batch, -1)
        return superres_pass(models.superres, low_tokens, context, win_key, sampler, tokens_BxN=tokens,
                             mask_BxN=mask)

    starts = [s * ratio for s in window_starts(canvas.shape[axis + 1], grid, toward_end, cover_all=True)]
    trajs = _fill_windows(models.superres, hr_canvas, hr_known, starts, axis, hr_grid, None, None, key, sampler,
                          condition=condition)
    return trajs, decode_tokens(models.highres_tokenizer, hr_canvas)


def _crop(images: np.ndarray, by: int, axis: int, toward_end: bool, side: int) -> np.ndarray:
    """Trim the canvas to the input side plus exactly ``by`` pixels (the tokens round up)."""
    size = side + by
    if toward_end:
        return images[:, :size] if axis == 0 else images[:, :, :size]
    return images[:, -size:] if axis == 0 else images[:, :, -size:]
