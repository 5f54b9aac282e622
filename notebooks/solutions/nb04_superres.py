"""Solutions to notebook 04's exercises (super-res conditioning §2.4, PSNR §2.5)."""

import math

import jax.numpy as jnp
import numpy as np


def superres_context(text_BxTxD, text_mask_BxT, lowres_BxMxD):
    context = jnp.concatenate([lowres_BxMxD, text_BxTxD], axis=1)
    lowres_mask_BxM = jnp.ones(lowres_BxMxD.shape[:2], bool)  # low-res tokens are never padding
    return context, jnp.concatenate([lowres_mask_BxM, text_mask_BxT], axis=1)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    if mse == 0:
        return float("inf")
    return 10 * math.log10(255**2 / mse)
