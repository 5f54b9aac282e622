"""Inpainting (§3.3.1; multi-scale at the super-res size: base, then super-res conditioned on it) and
mask-free editing (§3.3.2, then super-res) of images. Both take the models (:class:`EditModels`),
checked inputs and encoded prompts, never the pipeline; :class:`~muse_mini.pipeline.Pipeline` checks the options,
once, before any prompt is encoded (``check_paste_back``, ``inputs.check_extend``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from muse_mini.config import EditConfig, SamplerConfig
from muse_mini.data.shapes import downsample
from muse_mini.decoding.editing import EditTrajectory, pixel_mask_to_token_mask
from muse_mini.decoding.guidance import decode_guided, edit_guided, superres_pass
from muse_mini.editing.inputs import EditBatch
from muse_mini.models.codec import decode_tokens, encode_images


def _unplaced(tree):
    return tree


@dataclasses.dataclass(frozen=True)
class EditModels:
    """The frozen models an edit runs; ``place`` puts batch-leading arrays on the devices (a mesh)."""

    tokenizer: Any
    base: Any
    superres: Any = None
    highres_tokenizer: Any = None
    place: Callable = _unplaced

    @property
    def has_superres(self) -> bool:
        return self.superres is not None

    @property
    def sizes(self) -> tuple[int, ...]:
        """The image sides an edit accepts: the base size, and the super-res size when there is one."""
        low = self.tokenizer.image_size
        return (low, self.highres_tokenizer.image_size) if self.has_superres else (low,)

    def to_base_size(self, images: np.ndarray) -> np.ndarray:
        """Images at the base size, decimated by block averaging from the super-res size (§3.3.1)."""
        low = self.tokenizer.image_size
        return images if images.shape[1] == low else downsample(images, images.shape[1] // low)


@dataclasses.dataclass
class EditResult:
    """The requested stage's images (uint8 B×H×W×3), the base model's, and every step for the widgets.

    ``token_mask`` (B×N, base grid) marks the regenerated tokens: the masked
    region, or for mask-free editing every token resampled at least once.
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


def flat_tokens(vqgan, images: np.ndarray) -> np.ndarray:
    ids = encode_images(vqgan, images)
    return ids.reshape(len(ids), -1)


def paste(edited: np.ndarray, original: np.ndarray, regenerate: np.ndarray) -> np.ndarray:
    """The edited pixels where ``regenerate`` (B×H×W) is True, the input's elsewhere (diffusers' "overlay"):
    the convolutional decoder moves the pixels next to changed tokens a little."""
    return np.where(regenerate[..., None], edited, original).astype(np.uint8)


def check_paste_back(models: EditModels, paste_back, stage: str, side: int) -> None:
    """``paste_back`` needs the input at the output's size: a base-size image has no high-res pixels."""
    if not isinstance(paste_back, (bool, np.bool_)):
        raise ValueError(f"paste_back: expected True or False, got {paste_back!r}")
    if paste_back and stage == "superres" and side == models.tokenizer.image_size:
        high = models.highres_tokenizer.image_size
        raise ValueError(f"paste_back: the image is {side}×{side} but the super-res output is {high}×{high}; "
                         "give the image at the output's size to paste it back")


def _token_masks(masks: np.ndarray, grid: int, reduce: str) -> np.ndarray:
    """The base grid's token masks, refusing a mask that covers every token or none of an image's."""
    token_mask = np.asarray(pixel_mask_to_token_mask(masks, grid, reduce=reduce))
    full = np.flatnonzero(token_mask.all(axis=1))
    if len(full):
        raise ValueError(f"mask: covers every token of image {int(full[0])}; inpainting keeps part of the "
                         "image (use generate for a new image, or outpaint)")
    empty = np.flatnonzero(~token_mask.any(axis=1))
    if len(empty):
        raise ValueError(f"mask: marks no whole token of image {int(empty[0])} with reduce={reduce!r}; "
                         "use reduce='any' or a larger mask")
    return token_mask


def _superres(models: EditModels, result: EditResult, base_tokens, context, key, sampler: SamplerConfig,
              **inpaint_state) -> None:
    """Super-res over the base result (§2.4), in place; ``inpaint_state`` keeps known high-res tokens."""
    sr = superres_pass(models.superres, base_tokens, context, key, sampler, **inpaint_state)
    result.superres_trajectory = sr
    result.images = decode_tokens(models.highres_tokenizer, np.asarray(sr.tokens_BxN))


def inpaint(models: EditModels, batch: EditBatch, contexts, *, key, stage: str, sampler: SamplerConfig,
            superres_sampler: SamplerConfig, reduce: str = "any", paste_back: bool = False) -> EditResult:
    """Regenerate ``batch.masks`` under the prompts (§3.3.1); ``contexts`` is ``(context, uncond)``."""
    images, masks = batch.images, batch.masks
    side, low = images.shape[1], models.tokenizer.image_size
    factor = side // low
    low_masks = masks if factor == 1 else masks.reshape(len(masks), low, factor, low, factor).any(axis=(2, 4))
    token_mask = _token_masks(low_masks, models.tokenizer.grid, reduce)

    context, uncond = contexts
    key_base, key_sr = jax.random.split(key)
    low_images = models.to_base_size(images)
    tokens = flat_tokens(models.tokenizer, low_images)
    base = decode_guided(models.base, context, uncond, key_base, sampler, tokens_BxN=models.place(tokens),
                         mask_BxN=models.place(token_mask))
    base_images = decode_tokens(models.tokenizer, np.asarray(base.tokens_BxN))
    result = EditResult(base_images, batch.prompts, base_images, base, token_mask, tokenizer=models.tokenizer)
    if stage == "superres":
        known = {}
        if factor > 1:  # multi-scale: keep the high-res tokens outside the mask too
            known = {"tokens_BxN": flat_tokens(models.highres_tokenizer, images),
                     "mask_BxN": np.asarray(pixel_mask_to_token_mask(masks, models.highres_tokenizer.grid,
                                                                     reduce=reduce))}
        _superres(models, result, base.tokens_BxN, context, key_sr, superres_sampler, **known)
    if paste_back:  # after super-res, which reads the model's own base images
        result.base_images = paste(base_images, low_images, low_masks)
        result.images = result.base_images if stage == "base" else paste(result.images, images, masks)
    return result


def edit(models: EditModels, batch: EditBatch, contexts, *, key, stage: str, settings: EditConfig,
         superres_sampler: SamplerConfig) -> EditResult:
    """Walk each image's base tokens towards its prompt (§3.3.2) with ``settings``; then super-res."""
    context, uncond = contexts
    key_base, key_sr = jax.random.split(key)
    tokens = flat_tokens(models.tokenizer, models.to_base_size(batch.images))
    traj = edit_guided(models.base, context, uncond, models.place(tokens), key_base, settings)
    base_images = decode_tokens(models.tokenizer, np.asarray(traj.tokens_BxN))
    resampled = np.asarray(traj.resampled_BxIxN).any(axis=1)
    result = EditResult(base_images, batch.prompts, base_images, traj, resampled, tokenizer=models.tokenizer,
                        initial_tokens=tokens)
    if stage == "superres":
        _superres(models, result, traj.tokens_BxN, context, key_sr, superres_sampler)
    return result
