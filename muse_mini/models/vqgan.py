"""The VQGAN tokenizer: convolutional encoder, VQ codebook, decoder (Muse §2.2, §A.2).

Esser et al.'s VQGAN without its non-local blocks, so one fully convolutional model
encodes any image whose sides are multiples of the downsampling factor ``f`` (§2.2).
§2.5 finetunes a larger decoder with encoder and codebook frozen (:func:`grow_decoder`,
:func:`decoder_filter`). Images are ``HxWx3`` in ``[-1, 1]``; every ``__call__`` handles
ONE image (``jax.vmap`` over a batch).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from muse_mini.config import VQGANConfig
from muse_mini.models.quantizer import QuantizerAux, VectorQuantizer

# --------------------------------------------------------------------------
# Building blocks (CxHxW)


def norm_groups(channels: int) -> int:
    """GroupNorm's usual 32 groups, but at least 4 channels per group (instance norm would strip flat colours)."""
    return max(g for g in range(1, max(1, min(32, channels // 4)) + 1) if channels % g == 0)


def _conv(cin: int, cout: int, kernel: int, key, stride: int = 1) -> eqx.nn.Conv2d:
    return eqx.nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, key=key)


def _is_layer(x) -> bool:
    return isinstance(x, (eqx.nn.Conv2d, eqx.nn.GroupNorm, PixelNorm))


@eqx.filter_jit
def _fill(skeleton, key):
    layers = [x for x in jax.tree_util.tree_leaves(skeleton, is_leaf=_is_layer) if isinstance(x, eqx.nn.Conv2d)]
    sizes = [a.size for c in layers for a in (c.weight, c.bias) if a is not None]
    flat = iter(jnp.split(jax.random.uniform(key, (sum(sizes),), minval=-1.0, maxval=1.0), np.cumsum(sizes)[:-1]))

    def fill(layer):
        if isinstance(layer, eqx.nn.GroupNorm):
            layer = eqx.tree_at(lambda n: n.weight, layer, jnp.ones(layer.weight.shape))
            return eqx.tree_at(lambda n: n.bias, layer, jnp.zeros(layer.bias.shape))
        if isinstance(layer, PixelNorm):
            return eqx.tree_at(lambda n: n.scale, layer, jnp.ones(layer.scale.shape))
        if isinstance(layer, eqx.nn.Conv2d):  # Equinox's own default: U(±1/√fan_in)
            bound = 1.0 / math.sqrt(math.prod(layer.weight.shape[1:]))
            layer = eqx.tree_at(lambda c: c.weight, layer, bound * next(flat).reshape(layer.weight.shape))
            if layer.bias is None:
                return layer
            return eqx.tree_at(lambda c: c.bias, layer, bound * next(flat).reshape(layer.bias.shape))
        return layer

    return jax.tree_util.tree_map(fill, skeleton, is_leaf=_is_layer)


def fast_init(cls, *args, key: jax.Array, **kwargs):
    """``cls(*args, key=key, **kwargs)`` with the same init distribution, in one compiled call.

    Eager init compiles a random kernel per weight shape (slow on CPU); here every array is cut from one draw.
    """
    return _fill(eqx.filter_eval_shape(cls, *args, key=key, **kwargs), key)


class ResBlock(eqx.Module):
    """GroupNorm → swish → conv, twice, plus a (1×1 when widths differ) skip."""

    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None

    def __init__(self, cin: int, cout: int, *, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm1 = eqx.nn.GroupNorm(norm_groups(cin), cin)
        self.conv1 = _conv(cin, cout, 3, k1)
        self.norm2 = eqx.nn.GroupNorm(norm_groups(cout), cout)
        self.conv2 = _conv(cout, cout, 3, k2)
        self.skip = _conv(cin, cout, 1, k3) if cin != cout else None

    def __call__(self, x_CxHxW: Array) -> Array:
        h = self.conv1(jax.nn.swish(self.norm1(x_CxHxW)))
        h = self.conv2(jax.nn.swish(self.norm2(h)))
        return h + (x_CxHxW if self.skip is None else self.skip(x_CxHxW))


class Downsample(eqx.Module):
    """Stride-2 3×3 conv into the next level's width: halves H and W."""

    conv: eqx.nn.Conv2d

    def __init__(self, cin: int, cout: int, *, key: jax.Array):
        self.conv = _conv(cin, cout, 3, key, stride=2)

    def __call__(self, x_CxHxW: Array) -> Array:
        return self.conv(x_CxHxW)


class Upsample(eqx.Module):
    """Nearest-neighbour 2× then a 3×3 conv into the next width (no transposed-conv checkerboards)."""

    conv: eqx.nn.Conv2d

    def __init__(self, cin: int, cout: int, *, key: jax.Array):
        self.conv = _conv(cin, cout, 3, key)

    def __call__(self, x_CxHxW: Array) -> Array:
        return self.conv(jnp.repeat(jnp.repeat(x_CxHxW, 2, axis=1), 2, axis=2))


def _stack(widths, num_res_blocks: int, resample, keys) -> tuple[list[list[ResBlock]], list]:
    """ResBlocks at each width, and a resampling layer from each width to the next."""
    levels = [[ResBlock(w, w, key=next(keys)) for _ in range(num_res_blocks)] for w in widths]
    steps = [resample(a, b, key=next(keys)) for a, b in zip(widths[:-1], widths[1:])]
    return levels, steps


def _run(levels, steps, h):
    for i, blocks in enumerate(levels):
        for block in blocks:
            h = block(h)
        if i < len(steps):
            h = steps[i](h)
    return h


class Encoder(eqx.Module):
    """Image ``3xHxW`` → latents ``DxH/f xW/f`` (§2.2)."""

    conv_in: eqx.nn.Conv2d
    levels: list[list[ResBlock]]
    downs: list[Downsample]
    mid: list[ResBlock]
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d

    def __init__(self, base_channels: int, channel_mult, num_res_blocks: int, code_dim: int, *, key):
        keys = iter(jax.random.split(key, 3 + (len(channel_mult) + 1) * (num_res_blocks + 1)))
        widths = [base_channels * m for m in channel_mult]
        self.conv_in = _conv(3, widths[0], 3, next(keys))
        self.levels, self.downs = _stack(widths, num_res_blocks, Downsample, keys)
        self.mid = [ResBlock(widths[-1], widths[-1], key=next(keys)) for _ in range(num_res_blocks)]
        self.norm_out = eqx.nn.GroupNorm(norm_groups(widths[-1]), widths[-1])
        self.conv_out = _conv(widths[-1], code_dim, 1, next(keys))

    def __call__(self, x_3xHxW: Array) -> Array:
        h = _run(self.levels, self.downs, self.conv_in(x_3xHxW))
        for block in self.mid:
            h = block(h)
        return self.conv_out(jax.nn.swish(self.norm_out(h)))


class PixelNorm(eqx.Module):
    """RMS norm over each pixel's channels, learned scale, no offset: zero features stay zero."""

    scale: Float[Array, " C"]
    eps: float = eqx.field(static=True)

    def __init__(self, channels: int, eps: float = 1e-6):
        self.scale = jnp.ones((channels,))
        self.eps = eps

    def __call__(self, x_CxHxW: Array) -> Array:
        rms = jax.lax.rsqrt(jnp.mean(jnp.square(x_CxHxW), axis=0, keepdims=True) + self.eps)
        return x_CxHxW * rms * self.scale[:, None, None]


class PointwiseBlock(eqx.Module):
    """A residual block of bias-free 1×1 convs: mixes channels, widens no receptive field."""

    norm1: PixelNorm
    conv1: eqx.nn.Conv2d
    norm2: PixelNorm
    conv2: eqx.nn.Conv2d

    def __init__(self, channels: int, *, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.norm1, self.norm2 = PixelNorm(channels), PixelNorm(channels)
        self.conv1 = eqx.nn.Conv2d(channels, channels, 1, use_bias=False, key=k1)
        self.conv2 = eqx.nn.Conv2d(channels, channels, 1, use_bias=False, key=k2)

    def __call__(self, x_CxHxW: Array) -> Array:
        h = self.conv1(jax.nn.swish(self.norm1(x_CxHxW)))
        return x_CxHxW + self.conv2(jax.nn.swish(self.norm2(h)))


class LocalEncoder(eqx.Module):
    """Image ``3xHxW`` → latents, each seeing only a ``(2f+1)``-pixel window; white stays white.

    A toy-preset option, not the paper's encoder. With :class:`Encoder` each white cell's
    code depends on the rest of the image, so the transformers must learn ~100 "whites".
    Here white is shifted to 0 and bias-free convs with :class:`PixelNorm` keep it at 0,
    so every all-white window gets the same code.
    """

    conv_in: eqx.nn.Conv2d
    downs: list[eqx.nn.Conv2d]
    mid: list[PointwiseBlock]
    norm_out: PixelNorm
    conv_out: eqx.nn.Conv2d

    def __init__(self, base_channels: int, channel_mult, num_res_blocks: int, code_dim: int, *, key):
        widths = [base_channels * m for m in channel_mult]
        keys = iter(jax.random.split(key, 2 + len(widths) + 2 * num_res_blocks))
        self.conv_in = eqx.nn.Conv2d(3, widths[0], 3, padding=1, use_bias=False, key=next(keys))
        self.downs = [eqx.nn.Conv2d(a, b, 3, stride=2, padding=1, use_bias=False, key=next(keys))
                      for a, b in zip(widths[:-1], widths[1:])]
        self.mid = [PointwiseBlock(widths[-1], key=next(keys)) for _ in range(2 * num_res_blocks)]
        self.norm_out = PixelNorm(widths[-1])
        self.conv_out = _conv(widths[-1], code_dim, 1, next(keys))

    def __call__(self, x_3xHxW: Array) -> Array:
        shifted = x_3xHxW - 1.0  # white (1.0 in [-1, 1]) → 0
        # uint8 → float under jit can leave white at 1 ± 1e-7, which the norms
        # would amplify; anything within 1e-3 of white (an eighth of a uint8 step, which is 2/255 in [-1, 1]) is white.
        h = self.conv_in(jnp.where(jnp.abs(shifted) < 1e-3, 0.0, shifted))
        for down in self.downs:
            h = down(jax.nn.swish(h))
        for block in self.mid:
            h = block(h)
        return self.conv_out(jax.nn.swish(self.norm_out(h)))


class Decoder(eqx.Module):
    """Latents ``Dxhxw`` → image ``3x(h·f)x(w·f)``; mirrors the encoder (§2.2, §2.5)."""

    conv_in: eqx.nn.Conv2d
    mid: list[ResBlock]
    levels: list[list[ResBlock]]
    ups: list[Upsample]
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d

    def __init__(self, base_channels: int, channel_mult, num_res_blocks: int, code_dim: int, *, key):
        keys = iter(jax.random.split(key, 3 + (len(channel_mult) + 1) * (num_res_blocks + 1)))
        widths = [base_channels * m for m in reversed(channel_mult)]
        self.conv_in = _conv(code_dim, widths[0], 3, next(keys))
        self.mid = [ResBlock(widths[0], widths[0], key=next(keys)) for _ in range(num_res_blocks)]
        self.levels, self.ups = _stack(widths, num_res_blocks, Upsample, keys)
        self.norm_out = eqx.nn.GroupNorm(norm_groups(widths[-1]), widths[-1])
        self.conv_out = _conv(widths[-1], 3, 3, next(keys))

    def __call__(self, z_DxHxW: Array) -> Array:
        h = self.conv_in(z_DxHxW)
        for block in self.mid:
            h = block(h)
        h = _run(self.levels, self.ups, h)
        return self.conv_out(jax.nn.swish(self.norm_out(h)))


# --------------------------------------------------------------------------
# The tokenizer


class VQGAN(eqx.Module):
    """Encoder → :class:`~muse_mini.models.quantizer.VectorQuantizer` → decoder, built from a
    :class:`~muse_mini.config.schema.VQGANConfig`.

    ``cfg.encoder`` picks :class:`Encoder` (the paper's) or :class:`LocalEncoder` (the toy's);
    the decoder's sizes differ from the encoder's only for the §2.5 finetuned decoder.
    """

    encoder: Encoder | LocalEncoder
    quantizer: VectorQuantizer
    decoder: Decoder
    image_size: int = eqx.field(static=True)
    downsample: int = eqx.field(static=True)

    def __init__(self, cfg: VQGANConfig, *, key: jax.Array):
        k_enc, k_q, k_dec = jax.random.split(key, 3)
        encoder = {"full": Encoder, "local": LocalEncoder}[cfg.encoder]
        self.encoder = fast_init(encoder, cfg.base_channels, cfg.channel_mult, cfg.num_res_blocks, cfg.code_dim,
                                 key=k_enc)
        self.quantizer = VectorQuantizer(
            cfg.codebook_size, cfg.code_dim, commitment_weight=cfg.commitment_weight,
            normalize=cfg.code_normalize, key=k_q,
        )
        self.decoder = fast_init(
            Decoder, cfg.decoder_channels, cfg.channel_mult, cfg.decoder_res_blocks, cfg.code_dim, key=k_dec
        )
        self.image_size = cfg.image_size  # the training size; any multiple of f also works
        self.downsample = cfg.downsample

    @property
    def grid(self) -> int:
        """Tokens per side at the training size: ``image_size // downsample``."""
        return self.image_size // self.downsample

    def _check(self, img_HxWx3: Array) -> None:
        h, w = img_HxWx3.shape[:2] if img_HxWx3.ndim == 3 else (0, 0)
        if img_HxWx3.ndim != 3 or img_HxWx3.shape[-1] != 3 or h % self.downsample or w % self.downsample:
            raise ValueError(
                f"img: expected one (H, W, 3) image with H, W multiples of f={self.downsample}, "
                f"got {tuple(img_HxWx3.shape)} (vmap over a batch)"
            )

    def latents(self, img_HxWx3: Float[Array, "H W 3"]) -> Float[Array, "h w D"]:
        """Encoder output before quantization, channel-last."""
        self._check(img_HxWx3)
        return jnp.transpose(self.encoder(jnp.transpose(img_HxWx3, (2, 0, 1))), (1, 2, 0))

    def encode(self, img_HxWx3: Float[Array, "H W 3"]) -> Int[Array, "h w"]:
        """Image in ``[-1, 1]`` → token ids, ``h = H/f``, ``w = W/f``."""
        return self.quantizer.encode(self.latents(img_HxWx3))

    def decode_latents(self, z_hxwxD: Float[Array, "h w D"]) -> Float[Array, "H W 3"]:
        return jnp.transpose(self.decoder(jnp.transpose(z_hxwxD, (2, 0, 1))), (1, 2, 0))

    def decode_ids(self, ids_hxw: Int[Array, "h w"]) -> Float[Array, "H W 3"]:
        """Token ids → image (float, roughly ``[-1, 1]``)."""
        return self.decode_latents(self.quantizer.embed(ids_hxw))

    def __call__(self, img_HxWx3: Float[Array, "H W 3"]) -> tuple[Float[Array, "H W 3"], QuantizerAux]:
        """Reconstruction and the quantizer's ids and losses, for training."""
        z_q, aux = self.quantizer(self.latents(img_HxWx3))
        return self.decode_latents(z_q), aux


def grow_decoder(vqgan: VQGAN, cfg: VQGANConfig, *, key: jax.Array) -> VQGAN:
    """A VQGAN with ``vqgan``'s encoder and codebook and a fresh decoder sized by ``cfg`` (§2.5)."""
    fresh = VQGAN(cfg, key=key)
    if (fresh.quantizer.codebook_size, fresh.quantizer.code_dim) != vqgan.quantizer.codebook_KxD.shape:
        raise ValueError("cfg: codebook_size and code_dim must match the tokenizer being finetuned")
    return eqx.tree_at(lambda m: (m.encoder, m.quantizer), fresh, (vqgan.encoder, vqgan.quantizer))


def decoder_filter(vqgan: VQGAN):
    """``eqx.partition`` spec: True on the decoder's arrays only (§2.5 finetuning)."""
    spec = jax.tree_util.tree_map(lambda _: False, vqgan)
    return eqx.tree_at(lambda m: m.decoder, spec, jax.tree_util.tree_map(eqx.is_inexact_array, vqgan.decoder))


def all_filter(vqgan: VQGAN):
    """``eqx.partition`` spec training every float array (normal tokenizer training)."""
    return jax.tree_util.tree_map(eqx.is_inexact_array, vqgan)
