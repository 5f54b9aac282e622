"""Outpainting (Muse §3.3.1): regenerate outside a kept region, or extend an image past its frame.

Inside the frame this is inpainting of the complement. Past the frame the
output is wider (or taller) than anything the model was trained on, so the
canvas is generated window by window. Each window has the model's own size and
overlaps what is already known by at least half its width: its known tokens
(the input's, or earlier windows') stay fixed and the rest are generated, so
each new strip is conditioned on its neighbour. The token canvas is then
decoded whole (the VQGAN decoder is convolutional), with no seams between
windows. With super-res, the same windows run again at high resolution, each
conditioned on its own low-res window.
"""

from __future__ import annotations

import jax
import numpy as np

from muse_mini.decoding.guided import decode_with_sampler, superres_pass
from muse_mini.editing.inputs import as_images, as_masks, as_prompts, broadcast, repeat_to
from muse_mini.editing.methods import (
    EditResult, check_paste_back, contexts, flat_tokens, image_sizes, inpaint, to_base_size,
)
from muse_mini.models.codec import decode_tokens

DIRECTIONS = ("left", "right", "up", "down")


def window_starts(total: int, window: int, toward_end: bool, *, cover_all: bool = False) -> list[int]:
    """Offsets of the windows along the extended axis, nearest the known part first.

    Consecutive windows overlap by at least half a window. ``cover_all`` also
    takes the window over the known part itself (super-res regenerates it all).
    """
    stride = max(1, window // 2)
    starts = list(range(0 if cover_all else stride, total - window, stride)) + [total - window]
    starts = sorted(set(s for s in starts if s >= 0))
    return starts if toward_end else [total - window - s for s in starts]


def _check_extend(extend, by) -> None:
    if extend not in DIRECTIONS:
        raise ValueError(f"extend: expected one of {DIRECTIONS}, got {extend!r}")
    if isinstance(by, bool) or not isinstance(by, (int, np.integer)) or by < 1:
        raise ValueError(f"by: expected a positive number of pixels, got {by!r}")


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
            traj = decode_with_sampler(model, context, uncond, win_key, sampler, tokens_BxN=tokens, mask_BxN=mask)
        else:
            traj = condition(start, tokens, mask, win_key)
        canvas[index] = np.asarray(traj.tokens_BxN).reshape(canvas[index].shape)
        known[index[1:]] = True
        trajectories.append(traj)
    return trajectories


def outpaint(pipe, image, prompt, *, stage: str, sampler, superres_sampler, keep=None, extend=None, by=None,
             negative_prompt=None, seed: int = 0, paste_back: bool = False) -> EditResult:
    """Keep ``keep`` (in the frame) or the whole image (``extend`` by ``by`` pixels) and generate the rest."""
    if (keep is None) == (extend is None):
        raise ValueError("keep, extend: give keep= (a mask of the pixels to keep, inside the frame) "
                         "or extend= with by= (grow the frame), not both or neither")
    images = as_images(image, image_sizes(pipe))
    if keep is not None:
        keep_masks = as_masks(keep, images.shape[1], name="keep")
        return inpaint(pipe, images, ~keep_masks, prompt, stage=stage, sampler=sampler,
                       superres_sampler=superres_sampler, negative_prompt=negative_prompt, seed=seed,
                       paste_back=paste_back)
    _check_extend(extend, by)
    check_paste_back(pipe, paste_back, stage, images.shape[1])
    prompts = as_prompts(prompt)
    batch = broadcast({"image": images, "prompt": prompts})
    images, prompts = repeat_to(images, batch), repeat_to(prompts, batch)

    side, low = images.shape[1], pipe.tokenizer.image_size
    grid, patch = pipe.tokenizer.grid, low // pipe.tokenizer.grid
    scale = side // low  # by is in the input's pixels
    by_tokens = -(-by // (scale * patch))
    axis = 1 if extend in ("left", "right") else 0
    toward_end = extend in ("right", "down")
    shape = [grid, grid]
    shape[axis] += by_tokens
    origin = [0, 0]
    if not toward_end:
        origin[axis] = by_tokens
    place = (slice(origin[0], origin[0] + grid), slice(origin[1], origin[1] + grid))

    canvas = np.zeros((batch, *shape), np.int32)
    known = np.zeros(shape, bool)
    canvas[(slice(None), *place)] = flat_tokens(pipe.tokenizer, to_base_size(pipe, images)).reshape(batch, grid, grid)
    known[place] = True
    generated = ~known  # before the windows fill it in
    context, uncond = contexts(pipe, prompts, negative_prompt)
    key_base, key_sr = jax.random.split(jax.random.key(seed))
    starts = window_starts(shape[axis], grid, toward_end)
    base_trajs = _fill_windows(pipe.base, canvas, known, starts, axis, grid, context, uncond, key_base, sampler)
    base_images = decode_tokens(pipe.tokenizer, canvas)
    token_mask = np.broadcast_to(generated, (batch, *shape)).reshape(batch, -1)
    result = EditResult(base_images, prompts, base_images, base_trajs, token_mask, tokenizer=pipe.tokenizer)
    result.base_images = result.images = _crop(base_images, -(-by // scale), axis, toward_end, low)
    if stage == "superres":
        high = pipe.highres_tokenizer.image_size
        result.superres_trajectory, hr_images = _superres_windows(
            pipe, canvas, images if scale > 1 else None, place, axis, toward_end, context, key_sr, superres_sampler)
        result.images = _crop(hr_images, by * high // side, axis, toward_end, high)
    if paste_back:
        result.base_images = _paste_input(result.base_images, to_base_size(pipe, images), axis, toward_end)
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


def _superres_windows(pipe, canvas, highres_images, place, axis, toward_end, context, key, sampler):
    """Super-res over the whole low-res canvas, in overlapping windows; a high-res input keeps its tokens."""
    grid = pipe.tokenizer.grid
    hr_grid = pipe.highres_tokenizer.grid
    ratio = hr_grid // grid
    batch = len(canvas)
    hr_shape = [n * ratio for n in canvas.shape[1:]]
    hr_canvas = np.zeros((batch, *hr_shape), np.int32)
    hr_known = np.zeros(hr_shape, bool)
    if highres_images is not None:
        hr_place = tuple(slice(s.start * ratio, s.stop * ratio) for s in place)
        hr_canvas[(slice(None), *hr_place)] = flat_tokens(pipe.highres_tokenizer, highres_images).reshape(
            batch, hr_grid, hr_grid)
        hr_known[hr_place] = True

    def condition(hr_start, tokens, mask, win_key):
        start = hr_start // ratio
        index = [slice(None), slice(None), slice(None)]
        index[axis + 1] = slice(start, start + grid)
        low_tokens = canvas[tuple(index)].reshape(batch, -1)
        return superres_pass(pipe.superres, low_tokens, context, win_key, sampler, tokenizer=pipe.tokenizer,
                             tokens_BxN=tokens, mask_BxN=mask)

    starts = [s * ratio for s in window_starts(canvas.shape[axis + 1], grid, toward_end, cover_all=True)]
    trajs = _fill_windows(pipe.superres, hr_canvas, hr_known, starts, axis, hr_grid, None, None, key, sampler,
                          condition=condition)
    return trajs, decode_tokens(pipe.highres_tokenizer, hr_canvas)


def _crop(images: np.ndarray, by: int, axis: int, toward_end: bool, side: int) -> np.ndarray:
    """Trim the canvas to the input side plus exactly ``by`` pixels (the tokens round up)."""
    size = side + by
    if toward_end:
        return images[:, :size] if axis == 0 else images[:, :, :size]
    return images[:, -size:] if axis == 0 else images[:, :, -size:]
