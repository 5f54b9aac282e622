"""The super-resolution token translator (Muse §2.4, Figure 4, Table 6).

Low-res token ids pass through self-attention layers; the high-res masked transformer
cross-attends to their outputs beside the projected text. The ids are embedded by a
learned table (the paper), or with ``lowres_input="pixels"`` (the toy preset) drawn by
a frozen copy of the low-res decoder and projected patch by patch, as a ViT does.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from muse_mini.config import SuperResConfig
from muse_mini.models.codec import decode_ids_uint8
from muse_mini.models.images import to_float
from muse_mini.models.layers import BlockStack, Embedding, LayerNorm, LearnedPositions, Linear, compute_dtype
from muse_mini.models.quantizer import VectorQuantizer
from muse_mini.models.transformer import (
    Condition, MaskedTokenTransformer, TokenPredictor, check_same_batch, project_text,
)
from muse_mini.models.vqgan import VQGAN, Decoder


class FrozenDecoder(eqx.Module):
    """The low-res tokenizer's codebook and decoder (§2.2), kept frozen inside the super-res model."""

    quantizer: VectorQuantizer
    decoder: Decoder
    downsample: int = eqx.field(static=True)  # f: each id draws an f×f patch

    def __init__(self, tokenizer: VQGAN):
        self.quantizer, self.decoder, self.downsample = tokenizer.quantizer, tokenizer.decoder, tokenizer.downsample

    def decode_ids(self, ids_hxw: Int[Array, "h w"]) -> Float[Array, "H W 3"]:
        z_Dxhxw = jnp.transpose(self.quantizer.embed(ids_hxw), (2, 0, 1))
        return jnp.transpose(self.decoder(z_Dxhxw), (1, 2, 0))  # as VQGAN.decode_ids


class SuperResTransformer(TokenPredictor):
    """Masked high-res tokens + low-res token ids + text → high-res codebook logits.

    ``lowres_tokenizer`` (``lowres_input="pixels"`` only) is kept as ``lowres_decoder``,
    its encoder dropped. ``cfg.lowres_skip`` (toy only) adds each low-res output to the
    inputs of the high-res tokens it covers: the alignment Figure 4 leaves to cross-attention.
    """

    lowres_embed: Embedding | None
    lowres_patch_proj: Linear | None
    lowres_decoder: FrozenDecoder | None
    lowres_pos: LearnedPositions
    lowres_encoder: BlockStack
    lowres_norm: LayerNorm
    text_proj: Linear
    decoder: MaskedTokenTransformer
    lowres_children: Linear | None
    lowres_vocab_size: int = eqx.field(static=True)
    lowres_seq_len: int = eqx.field(static=True)
    lowres_input: str = eqx.field(static=True)
    lowres_margin: int = eqx.field(static=True)
    text_width: int = eqx.field(static=True)

    def __init__(
        self, cfg: SuperResConfig, *, vocab_size: int, seq_len: int, lowres_vocab_size: int,
        lowres_seq_len: int, text_width: int, lowres_tokenizer: VQGAN | None = None, key,
    ):
        k_emb, k_pos, k_enc, k_text, k_dec, k_skip = jax.random.split(key, 6)
        pixels = cfg.lowres_input == "pixels"
        self.lowres_embed = None if pixels else Embedding(lowres_vocab_size, cfg.width, key=k_emb)
        self.lowres_decoder = self.lowres_patch_proj = None
        if pixels:
            if lowres_tokenizer is None:
                raise ValueError("lowres_tokenizer: superres.lowres_input='pixels' needs the low-res tokenizer "
                                 "whose decoder draws the low-res tokens")
            if lowres_tokenizer.grid ** 2 != lowres_seq_len:
                raise ValueError(f"lowres_tokenizer: its {lowres_tokenizer.grid}² grid does not make "
                                 f"{lowres_seq_len} low-res tokens")
            self.lowres_decoder = FrozenDecoder(lowres_tokenizer)
            patch_dim = (lowres_tokenizer.downsample + 2 * cfg.lowres_margin) ** 2 * 3
            self.lowres_patch_proj = Linear(patch_dim, cfg.width, ("patch", "embed"), key=k_emb)
        self.lowres_pos = LearnedPositions(lowres_seq_len, cfg.width, key=k_pos)
        self.lowres_encoder = BlockStack(
            cfg.lowres_depth, cfg.width, cfg.mlp_dim, cfg.num_heads, cross=False,
            dropout=cfg.dropout, remat=cfg.remat, key=k_enc, kernel=cfg.attention,
        )
        # Pre-LN blocks leave the residual stream un-normalised; normalise it
        # before every high-res layer attends to it.
        self.lowres_norm = LayerNorm(cfg.width)
        self.text_proj = Linear(text_width, cfg.width, ("text_embed", "embed"), key=k_text)
        self.decoder = MaskedTokenTransformer(cfg, vocab_size=vocab_size, seq_len=seq_len, key=k_dec)
        self.lowres_vocab_size = lowres_vocab_size
        self.lowres_seq_len = lowres_seq_len
        self.lowres_input = cfg.lowres_input
        self.lowres_margin = cfg.lowres_margin
        self.text_width = text_width
        self.lowres_children = None
        if cfg.lowres_skip:
            _, r = _grid_ratio(lowres_seq_len, seq_len)
            self.lowres_children = Linear(cfg.width, r * r * cfg.width, ("embed", "children"), key=k_skip)

    def lowres_pixels(self, lowres: Int[Array, "*B M"]) -> Array:
        """The uint8 image the frozen low-res decoder draws for the ids (as ``codec.decode_ids_uint8``)."""
        arrays, static = eqx.partition(self.lowres_decoder, eqx.is_array)
        frozen = eqx.combine(jax.lax.stop_gradient(arrays), static)
        side = math.isqrt(self.lowres_seq_len)
        images = decode_ids_uint8(frozen, lowres.reshape(-1, side, side))
        return images.reshape(*lowres.shape[:-1], *images.shape[1:])

    def encode_lowres(self, lowres: Int[Array, "*B M"], *, key=None) -> Float[Array, "*B M D"]:
        """The low-res encoder of Figure 4: embedded ids through self-attention layers."""
        if lowres.ndim not in (1, 2) or lowres.shape[-1] != self.lowres_seq_len:
            raise ValueError(f"lowres: expected low-res token ids of shape ({self.lowres_seq_len},) or "
                             f"(batch, {self.lowres_seq_len}), got {tuple(lowres.shape)}")
        dt = compute_dtype(self.decoder.dtype)
        if self.lowres_input == "tokens":
            low_MxD = self.lowres_embed(lowres, dt)
        else:
            pixels = to_float(self.lowres_pixels(lowres)).astype(dt)
            patches = _patches(pixels, self.lowres_decoder.downsample, margin=self.lowres_margin)
            low_MxD = self.lowres_patch_proj(patches)
        low_MxD = low_MxD + self.lowres_pos(dt)
        return self.lowres_norm(self.lowres_encoder(low_MxD, key=key))

    def __call__(self, tokens: Int[Array, "*B N"], lowres: Int[Array, "*B M"], text: Float[Array, "*B L D"],
                 text_mask: Bool[Array, "*B L"], *, key=None) -> Float[Array, "*B N V"]:
        """Logits (float32) for one example or a batch; dropout only when ``key`` is given."""
        enc_key, dec_key = (None, None) if key is None else jax.random.split(key)
        cond = self.encode_condition(lowres, text, text_mask, key=enc_key)
        check_same_batch(tokens=tokens, lowres=cond.context[..., 0], text=text[..., 0])
        return self.logits(tokens, cond, key=dec_key)

    def encode_condition(self, lowres, text, text_mask, *, key=None) -> Condition:
        """Figure 4's context: the encoded low-res tokens beside the projected text (and the skip),
        encoded once per generation."""
        low_MxW = self.encode_lowres(jnp.asarray(lowres), key=key)
        check_same_batch(lowres=low_MxW[..., 0], text=text[..., 0])
        text_LxW = project_text(self.text_proj, text, text_mask, self.text_width, self.decoder.dtype)
        context_SxW = jnp.concatenate([low_MxW, text_LxW], axis=-2)
        context_mask_S = jnp.concatenate([jnp.ones(low_MxW.shape[:-1], bool), text_mask], axis=-1)
        extra_NxW = None
        if self.lowres_children is not None:
            extra_NxW = _children_to_grid(self.lowres_children(low_MxW), self.seq_len)
        return Condition(context_SxW, context_mask_S, extra_NxW)

    def logits(self, tokens: Int[Array, "*B N"], cond: Condition, *, key=None) -> Float[Array, "*B N V"]:
        """High-res logits given an encoded condition (:meth:`encode_condition`)."""
        return self.decoder(tokens, cond.context, cond.context_mask, extra=cond.extra, key=key)


def _grid_ratio(lowres_seq_len: int, seq_len: int) -> tuple[int, int]:
    """``(low-res side, high-res side / low-res side)`` of two square token grids."""
    m, n = math.isqrt(lowres_seq_len), math.isqrt(seq_len)
    if m * m != lowres_seq_len or n * n != seq_len or n % m:
        raise ValueError(f"lowres_skip: needs square grids, the high-res side a multiple of the low-res one; "
                         f"got {lowres_seq_len} and {seq_len} tokens")
    return m, n // m


def _children_to_grid(y_MxC: Array, seq_len: int) -> Array:
    """Per-parent child features → the flattened ``n×n`` grid ("pixel shuffle"): child ``(a, b)``
    (slice ``a·r + b``) of low-res cell ``(i, j)`` lands at ``(r·i + a, r·j + b)``, ``r = n/m``."""
    m, r = _grid_ratio(y_MxC.shape[-2], seq_len)
    *lead, _, c = y_MxC.shape
    d = c // (r * r)
    y = y_MxC.reshape(*lead, m, m, r, r, d)
    y = jnp.moveaxis(y, -3, -4)  # (..., i, a, j, b, d)
    return y.reshape(*lead, seq_len, d)


def _patches(image_xHxWx3: Array, patch: int, *, margin: int = 0) -> Array:
    """``(..., H, W, 3)`` → ``(..., (H/p)·(W/p), k·k·3)``: each token's ``p×p`` cell and ``margin``
    pixels around it (``k = p + 2·margin``, border pixels repeated), row-major."""
    *lead, h, w, ch = image_xHxWx3.shape
    k = patch + 2 * margin
    pad = [(0, 0)] * len(lead) + [(margin, margin), (margin, margin), (0, 0)]
    x = jnp.pad(image_xHxWx3, pad, mode="edge")
    rows = patch * np.arange(h // patch)[:, None] + np.arange(k)  # (H/p, k), padded coordinates
    cols = patch * np.arange(w // patch)[:, None] + np.arange(k)
    x = x[..., rows[:, None, :, None], cols[None, :, None, :], :]  # (..., H/p, W/p, k, k, ch)
    return x.reshape(*lead, (h // patch) * (w // patch), k * k * ch)
