"""Inpainting and mask-free editing with a trained pipeline (Muse §3.3), images in and images out.

The model was trained to fill in any masked subset of tokens (§2.6), so
editing needs no new training.

- **Inpainting** (§3.3.1) masks the tokens under a pixel mask and decodes
  them under the prompt; the others keep their ids. Given an image at the
  super-res size, it is multi-scale, as in the paper: the image is decimated
  to the base size, both sizes are tokenised and masked, the base model
  inpaints the low-res tokens, and super-res inpaints the high-res tokens
  conditioned on them.
- **Mask-free editing** (§3.3.2) resamples a random 8% of the tokens at each
  of 100 iterations under the new prompt, with top-k 3 and constant
  guidance, on the base model. Super-res then translates the result, as in
  the paper.

:class:`muse_mini.Pipeline`'s ``inpaint``, ``outpaint`` and ``edit`` methods
call these after checking their options.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from muse_mini.data.shapes import downsample
from muse_mini.decoding.editing import EditTrajectory, check_walk, pixel_mask_to_token_mask
from muse_mini.decoding.guided import decode_with_sampler, edit_with_guidance, superres_pass
from muse_mini.decoding.spec import check_real, check_top_k
from muse_mini.editing.inputs import as_images, as_masks, as_prompts, broadcast, repeat_to
from muse_mini.models.codec import decode_tokens, encode_images


@dataclasses.dataclass
class EditResult:
    """What an editing method returns.

    ``images`` are the requested stage's outputs (uint8, B×H×W×3), and
    ``base_images`` the base model's. ``token_mask`` (B×N, the base grid)
    marks the tokens that were regenerated: the masked region, or for
    mask-free editing every token resampled at least once. The trajectories
    hold every decoding step, or every editing iteration, for the widgets.
    """

    images: np.ndarray
    prompts: list[str]
    base_images: np.ndarray
    base_trajectory: Any  # Trajectory, EditTrajectory, or a list of Trajectory (one per outpainting window)
    token_mask: np.ndarray
    superres_trajectory: Any = None
    tokenizer: Any = dataclasses.field(default=None, repr=False)  # decodes iteration_images
    initial_tokens: Any = None  # mask-free editing: the input's base tokens (iteration 0)

    def iteration_images(self, iteration: int) -> np.ndarray:
        """Mask-free editing: the base images after ``iteration`` iterations (0 = the input's tokens)."""
        traj = self.base_trajectory
        if not isinstance(traj, EditTrajectory):
            raise ValueError("iteration: only a mask-free edit (Pipeline.edit) has iterations")
        total = traj.tokens_BxIxN.shape[1]
        if isinstance(iteration, bool) or not isinstance(iteration, (int, np.integer)) or not 0 <= iteration <= total:
            raise ValueError(f"iteration: expected an integer in [0, {total}], got {iteration!r}")
        tokens = self.initial_tokens if iteration == 0 else np.asarray(traj.tokens_BxIxN[:, iteration - 1])
        return decode_tokens(self.tokenizer, tokens)


def contexts(pipe, prompts: list[str], negative_prompt: str | None):
    """The encoded prompts and the unconditional (or negative-prompt) context, on the pipeline's mesh."""
    return pipe.guidance_contexts(pipe.encode(prompts), negative_prompt)


def image_sizes(pipe) -> tuple[int, ...]:
    """The image sides an edit accepts: the base size, and the super-res size when there is one."""
    low = pipe.tokenizer.image_size
    return (low, pipe.highres_tokenizer.image_size) if pipe.has_superres else (low,)


def to_base_size(pipe, images: np.ndarray) -> np.ndarray:
    """Images at the base size, decimated by block averaging when given at the super-res size (§3.3.1)."""
    low = pipe.tokenizer.image_size
    return images if images.shape[1] == low else downsample(images, images.shape[1] // low)


def flat_tokens(vqgan, images: np.ndarray) -> np.ndarray:
    ids = encode_images(vqgan, images)
    return ids.reshape(len(ids), -1)


def paste(edited: np.ndarray, original: np.ndarray, regenerate: np.ndarray) -> np.ndarray:
    """The edited pixels where ``regenerate`` (B×H×W) is True, the input's elsewhere.

    The decoder is convolutional, so tokens that changed also move the pixels
    of their unchanged neighbours a little; pasting the input back outside the
    user's mask (diffusers' "overlay") keeps those pixels exactly.
    """
    return np.where(regenerate[..., None], edited, original).astype(np.uint8)


def check_paste_back(pipe, paste_back, stage: str, side: int) -> None:
    """``paste_back`` needs the input at the output's size: a base-size image has no high-res pixels."""
    if not isinstance(paste_back, (bool, np.bool_)):
        raise ValueError(f"paste_back: expected True or False, got {paste_back!r}")
    if paste_back and stage == "superres" and side == pipe.tokenizer.image_size:
        high = pipe.highres_tokenizer.image_size
        raise ValueError(f"paste_back: the image is {side}×{side} but the super-res output is {high}×{high}; "
                         "give the image at the output's size to paste it back")


def inpaint(pipe, image, mask, prompt, *, stage: str, sampler, superres_sampler, negative_prompt=None,
            seed: int = 0, reduce: str = "any", paste_back: bool = False) -> EditResult:
    """Regenerate the masked part of each image under its prompt (§3.3.1); see :meth:`Pipeline.inpaint`."""
    images = as_images(image, image_sizes(pipe))
    side = images.shape[1]
    masks = as_masks(mask, side)
    prompts = as_prompts(prompt)
    batch = broadcast({"image": images, "mask": masks, "prompt": prompts})
    images, masks, prompts = repeat_to(images, batch), repeat_to(masks, batch), repeat_to(prompts, batch)

    low = pipe.tokenizer.image_size
    factor = side // low
    low_masks = masks if factor == 1 else masks.reshape(batch, low, factor, low, factor).any(axis=(2, 4))
    grid = pipe.tokenizer.grid
    token_mask = np.asarray(pixel_mask_to_token_mask(low_masks, grid, reduce=reduce))
    full = np.flatnonzero(token_mask.all(axis=1))
    if len(full):
        raise ValueError(f"mask: covers every token of image {int(full[0])}; inpainting keeps part of the "
                         "image (use generate for a new image, or outpaint)")
    if not token_mask.any(axis=1).all():
        raise ValueError(f"mask: marks no whole token of image {int(np.flatnonzero(~token_mask.any(axis=1))[0])} "
                         f"with reduce={reduce!r}; use reduce='any' or a larger mask")

    check_paste_back(pipe, paste_back, stage, side)
    context, uncond = contexts(pipe, prompts, negative_prompt)
    key_base, key_sr = jax.random.split(jax.random.key(seed))
    low_images = to_base_size(pipe, images)
    tokens = flat_tokens(pipe.tokenizer, low_images)
    base = decode_with_sampler(pipe.base, context, uncond, key_base, sampler, tokens_BxN=pipe.on_mesh(tokens),
                               mask_BxN=pipe.on_mesh(token_mask))
    base_images = decode_tokens(pipe.tokenizer, np.asarray(base.tokens_BxN))
    result = EditResult(base_images, prompts, base_images, base, token_mask, tokenizer=pipe.tokenizer)
    if stage == "superres":
        hr = {}
        if factor > 1:  # multi-scale: keep the high-res tokens outside the mask too
            hr_grid = pipe.highres_tokenizer.grid
            hr = {"tokens_BxN": flat_tokens(pipe.highres_tokenizer, images),
                  "mask_BxN": np.asarray(pixel_mask_to_token_mask(masks, hr_grid, reduce=reduce))}
        sr = superres_pass(pipe.superres, base.tokens_BxN, context, key_sr, superres_sampler,
                           images=pipe.on_mesh(base_images), **hr)
        result.superres_trajectory = sr
        result.images = decode_tokens(pipe.highres_tokenizer, np.asarray(sr.tokens_BxN))
    if paste_back:  # after super-res, which reads the model's own base images
        result.base_images = paste(base_images, low_images, low_masks)
        result.images = result.base_images if stage == "base" else paste(result.images, images, masks)
    return result


def check_edit_options(pipe, iterations, resample_fraction, top_k, guidance, temperature) -> None:
    """:meth:`Pipeline.edit`'s settings, checked before any image is encoded."""
    check_walk(iterations, resample_fraction, temperature)
    check_top_k(top_k, pipe.base.mask_id)
    check_real("guidance", guidance, low=-math.inf, strict=True)


def edit(pipe, image, prompt, *, stage: str, superres_sampler, iterations: int = 100,
                   resample_fraction: float = 0.08, guidance: float = 4.0, top_k: int | None = 3,
                   temperature: float = 1.0, negative_prompt=None, seed: int = 0) -> EditResult:
    """Walk each image's tokens towards its prompt (§3.3.2); see :meth:`Pipeline.edit`."""
    check_edit_options(pipe, iterations, resample_fraction, top_k, guidance, temperature)
    images = as_images(image, image_sizes(pipe))
    prompts = as_prompts(prompt)
    batch = broadcast({"image": images, "prompt": prompts})
    images, prompts = repeat_to(images, batch), repeat_to(prompts, batch)

    context, uncond = contexts(pipe, prompts, negative_prompt)
    key_base, key_sr = jax.random.split(jax.random.key(seed))
    tokens = flat_tokens(pipe.tokenizer, to_base_size(pipe, images))
    traj = edit_with_guidance(pipe.base, context, uncond, pipe.on_mesh(tokens), key_base, iterations=int(iterations),
                              resample_fraction=resample_fraction, guidance=guidance, top_k=top_k,
                              temperature=temperature)
    base_images = decode_tokens(pipe.tokenizer, np.asarray(traj.tokens_BxN))
    resampled = np.asarray(traj.resampled_BxIxN).any(axis=1)
    result = EditResult(base_images, prompts, base_images, traj, resampled, tokenizer=pipe.tokenizer,
                        initial_tokens=tokens)
    if stage == "superres":
        sr = superres_pass(pipe.superres, traj.tokens_BxN, context, key_sr, superres_sampler,
                           images=pipe.on_mesh(base_images))
        result.superres_trajectory = sr
        result.images = decode_tokens(pipe.highres_tokenizer, np.asarray(sr.tokens_BxN))
    return result
