"""Image conversion and validation shared by the tokenizer, its codec and its training: ``(N, H, W, 3)`` uint8 or float in ``[-1, 1]``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["check_images", "to_float", "to_uint8", "psnr"]

# Float images outside [-1, 1] by more than rounding are 0-255 data passed as float.
_FLOAT_RANGE_SLACK = 1e-3


def check_images(images, *, size: int | tuple[int, int] | None = None, multiple_of: int = 1, name: str = "images"):
    """A batch ``(N, H, W, 3)`` of uint8 or float images as an array: sides ``size`` exactly, else multiples of ``multiple_of``."""
    images = np.asarray(images) if not isinstance(images, jax.Array) else images
    want_hw = (size, size) if isinstance(size, int) else size
    shown = f"(N, {want_hw[0]}, {want_hw[1]}, 3)" if want_hw else f"(N, H, W, 3) with H, W multiples of {multiple_of}"
    expect = f"{name}: expected {shown} uint8 or float"
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{expect}, got {tuple(images.shape)}")
    if not (images.dtype == np.uint8 or jnp.issubdtype(images.dtype, jnp.floating)):
        raise ValueError(f"{expect}, got dtype {images.dtype}")
    hw = tuple(images.shape[1:3])
    if (want_hw and hw != tuple(want_hw)) or hw[0] % multiple_of or hw[1] % multiple_of:
        raise ValueError(f"{expect}, got {tuple(images.shape)}")
    if images.dtype != np.uint8 and images.size and not isinstance(images, jax.core.Tracer):
        lo, hi = float(images.min()), float(images.max())
        if lo < -1 - _FLOAT_RANGE_SLACK or hi > 1 + _FLOAT_RANGE_SLACK:
            raise ValueError(f"{name}: float images must lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                             "pass uint8 for 0-255 data, or scale it by x / 127.5 - 1")
    return images


def to_float(images_uint8) -> Float[Array, "... 3"]:
    """uint8 ``[0, 255]`` → float32 ``[-1, 1]``; float input is passed through."""
    if images_uint8.dtype == np.uint8:
        return jnp.asarray(images_uint8, jnp.float32) / 127.5 - 1.0
    return jnp.asarray(images_uint8, jnp.float32)


def to_uint8(images_float) -> np.ndarray:
    """float ``[-1, 1]`` → uint8 ``[0, 255]`` (clipped, rounded)."""
    x = np.asarray(images_float, np.float32)
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def psnr(a_uint8, b_uint8) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 image batches."""
    mse = np.mean((np.asarray(a_uint8, np.float64) - np.asarray(b_uint8, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
