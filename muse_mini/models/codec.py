"""The runtime image codec: uint8 images ↔ token ids with a trained VQGAN (Muse §2.2), apart from tokenizer training."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.models.images import check_images, to_float
from muse_mini.models.vqgan import VQGAN



@eqx.filter_jit
def encode_batch(vqgan: VQGAN, images_BxHxWx3):
    """Jitted: uint8 images → token ids, unchecked (inputs already checked, or traced in a step)."""
    return jax.vmap(vqgan.encode)(to_float(images_BxHxWx3))


@eqx.filter_jit
def _decode(vqgan: VQGAN, ids_Bxhxw):
    return decode_ids_uint8(vqgan, ids_Bxhxw)


def decode_ids_uint8(vqgan: VQGAN, ids_Bxhxw):
    """Jittable: token maps → uint8 images."""
    img = jax.vmap(vqgan.decode_ids)(ids_Bxhxw)
    return jnp.clip(jnp.round((img + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def decode_token_batch(vqgan: VQGAN, tokens_BxN):
    """Jittable: flat square token maps ``(B, h·w)`` → uint8 images (the samplers' output)."""
    side = math.isqrt(tokens_BxN.shape[-1])
    if side * side != tokens_BxN.shape[-1]:
        raise ValueError(f"tokens: expected (B, side²) square token maps, got {tokens_BxN.shape}")
    return decode_ids_uint8(vqgan, tokens_BxN.reshape(-1, side, side))


def _batched(fn, items, batch_size: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    out = [np.asarray(fn(items[i : i + batch_size]))
           for i in tqdm(range(0, len(items), batch_size), disable=not progress, desc=desc)]
    return np.concatenate(out) if out else np.zeros((0,), np.uint8)


def encode_images(vqgan: VQGAN, images, *, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """uint8 (or [-1, 1] float) images ``(N, S, S, 3)`` → token ids ``(N, S/f, S/f)`` int32."""
    images = check_images(images, size=vqgan.image_size)
    return _batched(lambda x: encode_batch(vqgan, x), images, batch_size, progress, "encode").astype(np.int32)


def decode_tokens(vqgan: VQGAN, ids, *, batch_size: int = 256) -> np.ndarray:
    """Token ids ``(N, h, w)`` or flat ``(N, h·w)`` → uint8 images ``(N, h·f, w·f, 3)``."""
    ids = np.asarray(ids)
    if ids.ndim == 2:
        side = math.isqrt(ids.shape[1])
        if side * side != ids.shape[1]:
            raise ValueError(f"ids: expected (N, h, w) or (N, side²), got {ids.shape}")
        ids = ids.reshape(len(ids), side, side)
    if ids.ndim != 3 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids: expected integer (N, h, w), got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= vqgan.quantizer.codebook_size):
        raise ValueError(f"ids: values must be in [0, {vqgan.quantizer.codebook_size}), "
                         f"got [{ids.min()}, {ids.max()}]")
    return _batched(lambda t: _decode(vqgan, t), ids, batch_size, False, "decode")


def reconstruct(vqgan: VQGAN, images, *, batch_size: int = 256) -> np.ndarray:
    """Encode then decode: uint8 ``(N, S, S, 3)`` → uint8 reconstructions."""
    return decode_tokens(vqgan, encode_images(vqgan, images, batch_size=batch_size), batch_size=batch_size)
