"""Solutions to notebook 05's exercises (inpainting, §3.3.1)."""

import numpy as np


def token_mask(pixel_mask_HxW, grid):
    H, W = pixel_mask_HxW.shape
    patches = np.asarray(pixel_mask_HxW, bool).reshape(grid, H // grid, grid, W // grid)
    return patches.any(axis=(1, 3))


def paste_back(original, generated, pixel_mask):
    return np.where(pixel_mask[..., None], generated, original).astype(np.uint8)
