"""What an edit accepts (Muse §3.3): images, masks and prompts from arrays, PIL images or files, checked once.

Every check raises a ``ValueError`` naming the argument, before any model runs.
This module needs no JAX, so the CLI checks its flags with it before loading a pipeline.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError


def _open(item, name: str, mode: str) -> np.ndarray:
    if isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as img:
                return np.asarray(img.convert(mode))
        except (FileNotFoundError, IsADirectoryError):
            raise ValueError(f"{name}: no image file {str(item)!r}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{name}: {str(item)!r} is not a readable image ({type(e).__name__})") from None
    if isinstance(item, Image.Image):
        return np.asarray(item.convert(mode))
    return np.asarray(item)


def _items(value) -> list:
    """One item or a sequence of items (a 4-D array counts as a batch)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray) and value.ndim in (3, 4) and value.dtype == bool:
        return list(value) if value.ndim == 3 else [value]
    if isinstance(value, np.ndarray) and value.ndim == 4:
        return list(value)
    return [value]


def as_images(image, sizes: Sequence[int], name: str = "image") -> np.ndarray:
    """``image`` (paths, PIL images, uint8 ``(H, W, 3)`` or ``(B, H, W, 3)`` arrays) as uint8 ``(B, S, S, 3)``."""
    arrays = [_open(item, name, "RGB") for item in _items(image)]
    if not arrays:
        raise ValueError(f"{name}: expected at least one image, got an empty sequence")
    sides = " or ".join(f"{s}×{s}" for s in sizes)
    for a in arrays:
        if a.dtype != np.uint8:
            raise ValueError(f"{name}: expected uint8 pixels (0-255), got dtype {a.dtype}")
        if a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(f"{name}: expected an (H, W, 3) RGB image, got shape {a.shape}")
        if a.shape[0] != a.shape[1] or a.shape[0] not in sizes:
            raise ValueError(f"{name}: expected {sides} pixels (the pipeline's sizes), got "
                             f"{a.shape[1]}×{a.shape[0]}")
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"{name}: the images differ in size {sorted({a.shape[:2] for a in arrays})}")
    return np.stack(arrays)


def as_masks(mask, side: int, name: str = "mask") -> np.ndarray:
    """``mask`` (paths or PIL images, white = grey > 127; boolean arrays) as bool ``(B, side, side)``, True = regenerate."""
    masks = []
    for item in _items(mask):
        a = _open(item, name, "L")
        if a.dtype != bool:
            if isinstance(item, (str, os.PathLike, Image.Image)):
                a = a > 127
            else:
                raise ValueError(f"{name}: expected a boolean (H, W) array or a PNG (white = regenerate), "
                                 f"got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"{name}: expected an (H, W) mask, got shape {a.shape}")
        if a.shape != (side, side):
            raise ValueError(f"{name}: its {a.shape[1]}×{a.shape[0]} pixels do not match the image's {side}×{side}")
        if not a.any():
            raise ValueError(f"{name}: no pixel is marked (white) for regeneration")
        masks.append(a)
    return np.stack(masks)


def as_prompts(prompt, name: str = "prompt") -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(f"{name}: expected a non-empty string or a list of them, got {prompt!r}")
    return prompts


def broadcast(name_values: dict[str, Sequence]) -> int:
    """The common batch size of the named inputs, each of length 1 or that size."""
    sizes = {len(v) for v in name_values.values()} - {1}
    if len(sizes) > 1:
        shown = ", ".join(f"{k}: {len(v)}" for k, v in name_values.items())
        raise ValueError(f"{', '.join(name_values)}: expected equal counts (or one of each to share), got {shown}")
    return sizes.pop() if sizes else 1


def repeat_to(values, batch: int):
    """``values`` (length 1 or ``batch``) as ``batch`` rows."""
    if isinstance(values, np.ndarray):
        return values if len(values) == batch else np.repeat(values, batch, axis=0)
    return list(values) if len(values) == batch else list(values) * batch


@dataclasses.dataclass(frozen=True)
class EditBatch:
    """One edit's checked inputs, one row per image: uint8 ``(B, S, S, 3)``, prompts, bool ``(B, S, S)`` masks."""

    images: np.ndarray
    prompts: list[str]
    masks: np.ndarray | None = None  # True = regenerate


def read_batch(image, prompt, sizes: Sequence[int], *, mask=None, mask_name: str = "mask") -> EditBatch:
    """Images, masks and prompts checked and broadcast to one batch (one of each is shared)."""
    images = as_images(image, sizes)
    masks = None if mask is None else as_masks(mask, images.shape[1], name=mask_name)
    prompts = as_prompts(prompt)
    named = {"image": images, **({} if masks is None else {mask_name: masks}), "prompt": prompts}
    batch = broadcast(named)
    return EditBatch(repeat_to(images, batch), repeat_to(prompts, batch),
                     None if masks is None else repeat_to(masks, batch))


DIRECTIONS = ("left", "right", "up", "down")
# Outpainting past the frame makes a canvas at most this many input sides long. Every
# further side costs two window decodings (about two generations) and is conditioned
# only on generated content, so a longer strip drifts from the input and takes minutes.
MAX_CANVAS_SIDES = 4


def check_extend(extend, by, side: int) -> None:
    """``extend`` a direction and ``by`` a positive pixel count (of the input's ``side``) within the canvas limit."""
    if extend not in DIRECTIONS:
        raise ValueError(f"extend: expected one of {DIRECTIONS}, got {extend!r}")
    if isinstance(by, bool) or not isinstance(by, (int, np.integer)) or by < 1:
        raise ValueError(f"by: expected a positive number of pixels, got {by!r}")
    largest = (MAX_CANVAS_SIDES - 1) * side
    if by > largest:
        raise ValueError(f"by: expected at most {largest} pixels ({MAX_CANVAS_SIDES - 1}× the {side}-pixel input: "
                         f"the canvas is at most {MAX_CANVAS_SIDES} sides long), got {by}")
