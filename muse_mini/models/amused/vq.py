"""aMUSEd's VQ image tokenizer in JAX: diffusers' ``VQModel`` as aMUSEd configures it.

The aMUSEd paper (Patil et al., 2024) reuses a VQGAN (Muse §2.2): a convolutional encoder
downsamples by ``2**(levels-1)`` (f16 for aMUSEd-256/512), each latent vector is replaced by
the index of its nearest code (8192 codes), and a decoder maps looked-up codes back to
pixels. No attention in the mid-blocks, GroupNorm eps 1e-6 everywhere. Pixels are in
``[0, 1]`` both ways: the aMUSEd pipelines do not rescale to ``[-1, 1]``, and clip the
decoded image to ``[0, 1]``. Each call handles ONE image ``3xHxW``; ``jax.vmap`` batches.

Module attribute paths equal diffusers' parameter names (``encoder.down_blocks.0.resnets.1
.norm2.weight``), so :func:`load_amused_vq` maps a safetensors file by name alone.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from muse_mini.models.amused.layers import load_named, read_diffusers_folder

_EPS = 1e-6


class Conv2d(eqx.Module):
    """torch's ``nn.Conv2d`` on one ``CxHxW`` image: weight ``(out, in, k, k)``, bias ``(out,)``."""

    weight: Float[Array, "out in k k"]
    bias: Float[Array, " out"]
    stride: int = eqx.field(static=True)
    padding: tuple[tuple[int, int], tuple[int, int]] = eqx.field(static=True)

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding=None):
        self.weight, self.bias = jnp.zeros((cout, cin, kernel, kernel)), jnp.zeros((cout,))
        self.stride = stride
        self.padding = ((kernel // 2,) * 2,) * 2 if padding is None else padding

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    def __call__(self, x_CxHxW: Array) -> Array:
        y = jax.lax.conv_general_dilated(x_CxHxW[None], self.weight.astype(x_CxHxW.dtype), (self.stride,) * 2,
                                         self.padding)[0]
        return y + self.bias.astype(y.dtype)[:, None, None]


class ResnetBlock(eqx.Module):
    """diffusers' ``ResnetBlock2D`` without a time embedding: two GroupNorm-SiLU-conv steps plus a skip."""

    norm1: eqx.nn.GroupNorm
    conv1: Conv2d
    norm2: eqx.nn.GroupNorm
    conv2: Conv2d
    conv_shortcut: Conv2d | None

    def __init__(self, cin: int, cout: int, groups: int):
        self.norm1, self.conv1 = eqx.nn.GroupNorm(groups, cin, eps=_EPS), Conv2d(cin, cout, 3)
        self.norm2, self.conv2 = eqx.nn.GroupNorm(groups, cout, eps=_EPS), Conv2d(cout, cout, 3)
        self.conv_shortcut = Conv2d(cin, cout, 1) if cin != cout else None

    def __call__(self, x_CxHxW: Array) -> Array:
        h = self.conv1(jax.nn.silu(self.norm1(x_CxHxW)))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        skip = x_CxHxW if self.conv_shortcut is None else self.conv_shortcut(x_CxHxW)
        return skip + h


class Resample(eqx.Module):
    """×2 down (stride-2 conv, zero pad right/bottom only) or up (nearest ×2, then conv)."""

    conv: Conv2d
    up: bool = eqx.field(static=True)

    def __init__(self, channels: int, up: bool):
        self.up = up
        # Downsample2D(padding=0) pads (left 0, right 1, top 0, bottom 1) before its 3x3 stride-2 conv.
        self.conv = Conv2d(channels, channels, 3) if up else Conv2d(channels, channels, 3, 2, ((0, 1), (0, 1)))

    def __call__(self, x_CxHxW: Array) -> Array:
        if self.up:  # torch's F.interpolate(scale_factor=2, mode="nearest")
            x_CxHxW = jnp.repeat(jnp.repeat(x_CxHxW, 2, axis=1), 2, axis=2)
        return self.conv(x_CxHxW)


class Level(eqx.Module):
    """One resolution of the encoder (``DownEncoderBlock2D``) or decoder (``UpDecoderBlock2D``)."""

    resnets: list[ResnetBlock]
    downsamplers: list[Resample]
    upsamplers: list[Resample]

    def __init__(self, cin: int, cout: int, depth: int, groups: int, resample: str | None):
        self.resnets = [ResnetBlock(cin if i == 0 else cout, cout, groups) for i in range(depth)]
        self.downsamplers = [Resample(cout, up=False)] if resample == "down" else []
        self.upsamplers = [Resample(cout, up=True)] if resample == "up" else []

    def __call__(self, x_CxHxW: Array) -> Array:
        for layer in [*self.resnets, *self.downsamplers, *self.upsamplers]:
            x_CxHxW = layer(x_CxHxW)
        return x_CxHxW


class MidBlock(eqx.Module):
    """``UNetMidBlock2D`` with ``add_attention=False``: two resnet blocks."""

    resnets: list[ResnetBlock]

    def __init__(self, channels: int, groups: int):
        self.resnets = [ResnetBlock(channels, channels, groups) for _ in range(2)]

    def __call__(self, x_CxHxW: Array) -> Array:
        return self.resnets[1](self.resnets[0](x_CxHxW))


def _levels(widths, depth: int, groups: int, resample: str) -> list[Level]:
    ins = (widths[0], *widths[:-1])
    return [Level(a, b, depth, groups, resample if i < len(widths) - 1 else None)
            for i, (a, b) in enumerate(zip(ins, widths))]


class Encoder(eqx.Module):
    """Pixels ``3xHxW`` → latents ``LxH/fxW/f`` (diffusers' ``Encoder`` with ``double_z=False``)."""

    conv_in: Conv2d
    down_blocks: list[Level]
    mid_block: MidBlock
    conv_norm_out: eqx.nn.GroupNorm
    conv_out: Conv2d

    def __init__(self, cin: int, cout: int, widths: tuple[int, ...], depth: int, groups: int):
        self.conv_in = Conv2d(cin, widths[0], 3)
        self.down_blocks = _levels(widths, depth, groups, "down")
        self.mid_block = MidBlock(widths[-1], groups)
        self.conv_norm_out = eqx.nn.GroupNorm(groups, widths[-1], eps=_EPS)
        self.conv_out = Conv2d(widths[-1], cout, 3)

    def __call__(self, x_3xHxW: Array) -> Array:
        h = self.conv_in(x_3xHxW)
        for block in self.down_blocks:
            h = block(h)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(self.mid_block(h))))


class Decoder(eqx.Module):
    """Latents → pixels (diffusers' ``Decoder``, ``norm_type="group"``; one resnet more per level)."""

    conv_in: Conv2d
    mid_block: MidBlock
    up_blocks: list[Level]
    conv_norm_out: eqx.nn.GroupNorm
    conv_out: Conv2d

    def __init__(self, cin: int, cout: int, widths: tuple[int, ...], depth: int, groups: int):
        self.conv_in = Conv2d(cin, widths[-1], 3)
        self.mid_block = MidBlock(widths[-1], groups)
        self.up_blocks = _levels(widths[::-1], depth + 1, groups, "up")
        self.conv_norm_out = eqx.nn.GroupNorm(groups, widths[0], eps=_EPS)
        self.conv_out = Conv2d(widths[0], cout, 3)

    def __call__(self, z_LxhxW: Array) -> Array:
        h = self.mid_block(self.conv_in(z_LxhxW))
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(h)))


class Codebook(eqx.Module):
    """diffusers' ``VectorQuantizer`` at inference: its ``embedding`` table and nearest-code search."""

    embedding: eqx.nn.Embedding

    def nearest(self, z_NxD: Array) -> Int[Array, " N"]:
        """Index of the closest code in Euclidean distance (``|z|²`` is the same for every code, so dropped)."""
        codes_KxD = self.embedding.weight.astype(jnp.float32)
        dots_NxK = jnp.matmul(z_NxD.astype(jnp.float32), codes_KxD.T, precision=jax.lax.Precision.HIGHEST)
        return jnp.argmin(jnp.sum(codes_KxD**2, axis=-1) - 2.0 * dots_NxK, axis=-1)


class AmusedVQ(eqx.Module):
    """aMUSEd's VQ-GAN (Patil et al., 2024; Muse §2.2): ``encode`` image → code grid, ``decode`` back.

    Built with zero weights; :func:`vq_from_config` fills them at random, :func:`load_amused_vq`
    from a checkpoint.
    """

    encoder: Encoder
    quant_conv: Conv2d
    quantize: Codebook
    post_quant_conv: Conv2d
    decoder: Decoder
    factor: int = eqx.field(static=True)

    def __init__(self, *, widths, depth: int, groups: int, latent: int, embed: int, codes: int, cin=3, cout=3):
        self.encoder = Encoder(cin, latent, widths, depth, groups)
        self.quant_conv = Conv2d(latent, embed, 1)
        self.quantize = Codebook(eqx.nn.Embedding(weight=jnp.zeros((codes, embed))))
        self.post_quant_conv = Conv2d(embed, latent, 1)
        self.decoder = Decoder(latent, cout, widths, depth, groups)
        self.factor = 2 ** (len(widths) - 1)

    @property
    def codebook_size(self) -> int:
        return self.quantize.embedding.num_embeddings

    def encode(self, image_3xHxW: Float[Array, "3 H W"]) -> Int[Array, "h w"]:
        """Image in ``[0, 1]`` → nearest-code indices ``(H/f, W/f)`` (the img2img/inpaint pipelines' tokens)."""
        image_3xHxW, cin, f = jnp.asarray(image_3xHxW), self.encoder.conv_in.in_channels, self.factor
        if image_3xHxW.ndim != 3 or image_3xHxW.shape[0] != cin or any(s % f for s in image_3xHxW.shape[1:]):
            raise ValueError(f"image_3xHxW: expected shape ({cin}, H, W) with H, W multiples of {f}, "
                             f"got {tuple(image_3xHxW.shape)}")
        z_DxhxW = self.quant_conv(self.encoder(image_3xHxW.astype(self.quant_conv.weight.dtype)))
        d, h, w = z_DxhxW.shape
        return self.quantize.nearest(z_DxhxW.reshape(d, h * w).T).reshape(h, w)

    def decode(self, indices_hxw: Int[Array, "h w"], *, clip: bool = True) -> Float[Array, "3 H W"]:
        """Code indices → image ``(3, h·f, w·f)``; ``clip`` to ``[0, 1]`` as the aMUSEd pipelines do."""
        indices_hxw = jnp.asarray(indices_hxw)
        if indices_hxw.ndim != 2 or not jnp.issubdtype(indices_hxw.dtype, jnp.integer):
            raise ValueError(f"indices_hxw: expected an integer (h, w) grid, "
                             f"got {indices_hxw.dtype} {tuple(indices_hxw.shape)}")
        codes_hxwxD = self.quantize.embedding.weight[indices_hxw]
        image = self.decoder(self.post_quant_conv(jnp.moveaxis(codes_hxwxD, -1, 0)))
        return jnp.clip(image, 0.0, 1.0) if clip else image


def _skeleton(config: dict) -> AmusedVQ:
    """The module as shapes only (``eqx.filter_eval_shape``), for the layouts aMUSEd uses."""
    cfg = {"in_channels": 3, "out_channels": 3, "layers_per_block": 1, "act_fn": "silu", "latent_channels": 3,
           "num_vq_embeddings": 256, "norm_num_groups": 32, "vq_embed_dim": None, "norm_type": "group",
           "mid_block_add_attention": True, "down_block_types": ("DownEncoderBlock2D",),
           "up_block_types": ("UpDecoderBlock2D",), "block_out_channels": (64,), **config}  # VQModel's defaults
    widths = tuple(cfg["block_out_channels"])
    wanted = {"act_fn": "silu", "norm_type": "group", "mid_block_add_attention": False,
              "down_block_types": ["DownEncoderBlock2D"] * len(widths),
              "up_block_types": ["UpDecoderBlock2D"] * len(widths)}
    wrong = {k: cfg[k] for k, v in wanted.items() if (list(cfg[k]) if k.endswith("types") else cfg[k]) != v}
    if wrong or cfg.get("_class_name", "VQModel") != "VQModel":
        raise ValueError(f"config: only aMUSEd's VQModel layout is supported ({wanted}); "
                         f"got {wrong or cfg['_class_name']}")
    if any(w % cfg["norm_num_groups"] for w in widths):
        raise ValueError(f"config: block_out_channels {list(widths)} must be multiples of norm_num_groups")
    latent = cfg["latent_channels"]
    return eqx.filter_eval_shape(
        AmusedVQ, widths=widths, depth=cfg["layers_per_block"], groups=cfg["norm_num_groups"], latent=latent,
        embed=cfg["vq_embed_dim"] or latent, codes=cfg["num_vq_embeddings"], cin=cfg["in_channels"],
        cout=cfg["out_channels"])


def vq_from_config(config: dict, *, key) -> AmusedVQ:
    """Random :class:`AmusedVQ` from a diffusers ``VQModel`` ``config.json`` dict: weights U(±1/√fan_in),
    norm scales 1, biases 0, all cut from ONE draw (eager init compiles a kernel per shape)."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(_skeleton(config))
    noise = np.asarray(jax.random.uniform(key, (sum(leaf.size for _, leaf in paths),), minval=-1.0, maxval=1.0))
    arrays, start = [], 0
    for path, leaf in paths:
        values = noise[start:start + leaf.size].reshape(leaf.shape) / np.sqrt(np.prod(leaf.shape[1:]))
        start += leaf.size
        if leaf.ndim == 1:  # GroupNorm weights and every bias
            values = np.full(leaf.shape, float(getattr(path[-1], "name", "") == "weight"))
        arrays.append(jnp.asarray(values, jnp.float32))
    return jax.tree_util.tree_unflatten(treedef, arrays)


def vq_from_tensors(config: dict, tensors, dtype=jnp.float32) -> AmusedVQ:
    """:class:`AmusedVQ` from a ``config.json`` dict and ``{diffusers name: array}`` (a safetensors file, or a torch
    ``state_dict`` as numpy)."""
    return load_named(_skeleton(config), tensors, "vqvae", dtype=dtype)


def load_amused_vq(folder, dtype=jnp.float32) -> AmusedVQ:
    """:class:`AmusedVQ` from a diffusers ``vqvae/`` folder (fp32 or fp16 safetensors, cast to ``dtype``)."""
    config, tensors = read_diffusers_folder(folder, "vqvae")
    return vq_from_tensors(config, tensors, dtype)
