"""The super-resolution token translator (Muse §2.4, Figure 4, Table 6).

A ``16×16`` low-res token map (from the base model, or the low-res VQGAN at
training time) is translated into a ``64×64`` high-res map for the f=8 VQGAN.
Figure 4: the low-res tokens pass through ``lowres_depth`` self-attention-only
layers; their output embeddings are concatenated (along the sequence) with the
projected text, and the high-res masked transformer — the same blocks as the
base model — cross-attends to that concatenation. Training masks high-res tokens
at arccos rates and drops the text on 10% of examples; the low-res
conditioning is always kept (it is the input being translated).

How the low-res tokens are embedded is ``cfg.lowres_input``:

* ``"tokens"`` (the paper): a learned table, one vector per low-res code.
* ``"pixels"`` (the toy preset): the frozen low-res VQGAN decodes the tokens
  and each token's ``f×f`` pixel patch is projected linearly, as a ViT embeds
  patches. The input is still a function of the low-res tokens alone (the
  decoder is frozen), but the model is handed what each code *looks like*
  instead of learning it for every code from scratch; on the toy world the
  token table learned too slowly to be useful.
  :func:`lowres_condition` turns token maps into what the model takes.
  ``cfg.lowres_margin`` widens each patch by that many pixels of its
  neighbours on every side (overlapping windows, border pixels repeated), so
  the embedding of a token already sees the edges that cross into it.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from muse_mini.config import SuperResConfig
from muse_mini.models.codec import decode_tokens
from muse_mini.models.vqgan import to_float
from muse_mini.models.layers import BlockStack, Embedding, LayerNorm, LearnedPositions, Linear, compute_dtype
from muse_mini.models.transformer import (
    Condition, MaskedTokenTransformer, TokenPredictor, check_same_batch, project_text,
)


class SuperResTransformer(TokenPredictor):
    """Masked high-res tokens + low-res tokens + text → high-res codebook logits.

    ``vocab_size``/``seq_len`` are the high-res tokenizer's codebook and
    ``grid²``; ``lowres_vocab_size``/``lowres_seq_len`` the low-res one's. The
    low-res tokens are always complete, so their table has no ``[MASK]`` row;
    the high-res ``mask_id`` is ``vocab_size``. ``lowres_patch`` is the low-res
    tokenizer's downsampling factor f, used when ``cfg.lowres_input ==
    "pixels"``: the model then takes the decoded low-res image instead of the
    token ids (see the module docstring).

    With ``cfg.lowres_skip`` each low-res encoder output is also projected to
    one vector per high-res token it covers (a 2×2 block when the grids are 8
    and 16; a learned "sub-pixel" projection, one slice per child position),
    which is added to that token's input embedding. Figure 4 has
    cross-attention only, which must learn from scratch which low-res keys sit
    above each high-res query; the toy model did not learn that alignment in
    its step budget and decoded blank images. The skip hands it the
    alignment; the paper presets keep it off.
    """

    lowres_embed: Embedding | None
    lowres_patch_proj: Linear | None
    lowres_pos: LearnedPositions
    lowres_encoder: BlockStack
    lowres_norm: LayerNorm
    text_proj: Linear
    decoder: MaskedTokenTransformer
    lowres_children: Linear | None
    lowres_vocab_size: int = eqx.field(static=True)
    lowres_seq_len: int = eqx.field(static=True)
    lowres_input: str = eqx.field(static=True)
    lowres_patch: int = eqx.field(static=True)
    lowres_margin: int = eqx.field(static=True)
    text_width: int = eqx.field(static=True)

    def __init__(
        self, cfg: SuperResConfig, *, vocab_size: int, seq_len: int, lowres_vocab_size: int,
        lowres_seq_len: int, text_width: int, lowres_patch: int = 1, key,
    ):
        k_emb, k_pos, k_enc, k_text, k_dec, k_skip = jax.random.split(key, 6)
        pixels = cfg.lowres_input == "pixels"
        self.lowres_embed = None if pixels else Embedding(lowres_vocab_size, cfg.width, key=k_emb)
        patch_dim = (lowres_patch + 2 * cfg.lowres_margin) ** 2 * 3
        self.lowres_patch_proj = Linear(patch_dim, cfg.width, ("patch", "embed"), key=k_emb) if pixels else None
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
        self.lowres_patch = lowres_patch
        self.lowres_margin = cfg.lowres_margin
        self.text_width = text_width
        self.lowres_children = None
        if cfg.lowres_skip:
            _, r = _grid_ratio(lowres_seq_len, seq_len)
            self.lowres_children = Linear(cfg.width, r * r * cfg.width, ("embed", "children"), key=k_skip)

    @property
    def lowres_shape(self) -> tuple[int, ...]:
        """The shape of one example's low-res input: token ids, or the decoded image."""
        if self.lowres_input == "tokens":
            return (self.lowres_seq_len,)
        side = math.isqrt(self.lowres_seq_len) * self.lowres_patch
        return (side, side, 3)

    def encode_lowres(self, lowres, *, key=None) -> Float[Array, "M D"]:
        """The low-res encoder of Figure 4: embedded tokens through self-attention layers.

        ``lowres`` is ``(M,)`` token ids, or with ``lowres_input="pixels"`` the
        ``(H, W, 3)`` image they decode to (float in [-1, 1]); either with an
        optional leading batch axis.
        """
        shape = self.lowres_shape
        if lowres.ndim not in (len(shape), len(shape) + 1) or tuple(lowres.shape[-len(shape):]) != shape:
            what = "token ids" if self.lowres_input == "tokens" else "decoded low-res image (lowres_condition)"
            raise ValueError(
                f"lowres: expected {what} of shape {shape} for one example or (batch, *{shape}), "
                f"got {tuple(lowres.shape)}"
            )
        dt = compute_dtype(self.decoder.dtype)
        if self.lowres_input == "tokens":
            low_MxD = self.lowres_embed(lowres, dt)
        else:
            patches = _patches(lowres.astype(dt), self.lowres_patch, margin=self.lowres_margin)
            low_MxD = self.lowres_patch_proj(patches)
        low_MxD = low_MxD + self.lowres_pos(dt)
        return self.lowres_norm(self.lowres_encoder(low_MxD, key=key))

    def __call__(self, tokens_N: Int[Array, " N"], lowres, text_LxD: Float[Array, "L D"],
                 text_mask_L: Bool[Array, " L"], *, key=None) -> Float[Array, "N V"]:
        """Logits (float32) for one example or a batch; dropout only when ``key`` is given.

        ``lowres`` is what :func:`lowres_condition` gives: token ids, or the
        decoded low-res image for ``lowres_input="pixels"``.
        """
        enc_key, dec_key = (None, None) if key is None else jax.random.split(key)
        cond = self.encode_condition(lowres, text_LxD, text_mask_L, key=enc_key)
        check_same_batch(tokens=tokens_N, lowres=cond.context[..., 0], text=text_LxD[..., 0])
        return self.logits(tokens_N, cond, key=dec_key)

    def encode_condition(self, lowres, text_LxD, text_mask_L, *, key=None) -> Condition:
        """Figure 4's context: the encoded low-res tokens next to the projected text, plus the skip.

        Constant while the high-res tokens are decoded, so a sampler encodes
        it once per generation and calls :meth:`logits` at every step.
        """
        low_MxW = self.encode_lowres(lowres, key=key)
        check_same_batch(lowres=low_MxW[..., 0], text=text_LxD[..., 0])
        text_LxW = project_text(self.text_proj, text_LxD, text_mask_L, self.text_width, self.decoder.dtype)
        context_SxW = jnp.concatenate([low_MxW, text_LxW], axis=-2)
        context_mask_S = jnp.concatenate([jnp.ones(low_MxW.shape[:-1], bool), text_mask_L], axis=-1)
        extra_NxW = None
        if self.lowres_children is not None:
            extra_NxW = _children_to_grid(self.lowres_children(low_MxW), self.seq_len)
        return Condition(context_SxW, context_mask_S, extra_NxW)

    def logits(self, tokens_N, cond: Condition, *, key=None) -> Float[Array, "N V"]:
        """High-res logits given an encoded condition (:meth:`encode_condition`)."""
        return self.decoder(tokens_N, cond.context, cond.context_mask, extra=cond.extra, key=key)


def _grid_ratio(lowres_seq_len: int, seq_len: int) -> tuple[int, int]:
    """``(low-res side, high-res side / low-res side)`` of two square token grids."""
    m, n = math.isqrt(lowres_seq_len), math.isqrt(seq_len)
    if m * m != lowres_seq_len or n * n != seq_len or n % m:
        raise ValueError(f"lowres_skip: needs square grids, the high-res side a multiple of the low-res one; "
                         f"got {lowres_seq_len} and {seq_len} tokens")
    return m, n // m


def _children_to_grid(y_MxC: Array, seq_len: int) -> Array:
    """Per-parent child features → the flattened ``n×n`` grid ("pixel shuffle").

    ``y_MxC`` holds, for each cell of the flattened ``m×m`` low-res grid,
    ``r·r`` vectors of width ``C/r²`` (``r = n/m``), child ``(a, b)`` at slice
    ``a·r + b``; child ``(a, b)`` of cell ``(i, j)`` lands at ``(r·i + a, r·j + b)``.
    """
    m, r = _grid_ratio(y_MxC.shape[-2], seq_len)
    *lead, _, c = y_MxC.shape
    d = c // (r * r)
    y = y_MxC.reshape(*lead, m, m, r, r, d)
    y = jnp.moveaxis(y, -3, -4)  # (..., i, a, j, b, d)
    return y.reshape(*lead, seq_len, d)


def _patches(image_xHxWx3: Array, patch: int, *, margin: int = 0) -> Array:
    """``(..., H, W, 3)`` → ``(..., (H/p)·(W/p), k·k·3)``, ``k = p + 2·margin``.

    Patch ``(i, j)`` (row-major) is the ``k×k`` window whose top-left pixel is
    ``(p·i − margin, p·j − margin)``: the token's ``p×p`` cell and ``margin``
    pixels around it, the image's border pixels repeated outside it.
    """
    *lead, h, w, ch = image_xHxWx3.shape
    k = patch + 2 * margin
    pad = [(0, 0)] * len(lead) + [(margin, margin), (margin, margin), (0, 0)]
    x = jnp.pad(image_xHxWx3, pad, mode="edge")
    rows = patch * np.arange(h // patch)[:, None] + np.arange(k)  # (H/p, k), padded coordinates
    cols = patch * np.arange(w // patch)[:, None] + np.arange(k)
    x = x[..., rows[:, None, :, None], cols[None, :, None, :], :]  # (..., H/p, W/p, k, k, ch)
    return x.reshape(*lead, (h // patch) * (w // patch), k * k * ch)


def lowres_condition(model: SuperResTransformer, lowres_tokens_BxM, *, tokenizer=None, images=None):
    """What ``model`` takes as its low-res input, from low-res token maps ``(B, M)``.

    The token ids themselves, or for ``lowres_input="pixels"`` the images the
    frozen low-res ``tokenizer`` decodes them to, as float in [-1, 1]. Pass
    those ``images`` (uint8) instead of the tokenizer when they are at hand.
    """
    if model.lowres_input == "tokens":
        return jnp.asarray(lowres_tokens_BxM)
    if images is None:
        if tokenizer is None:
            raise ValueError("tokenizer: a super-res model with lowres_input='pixels' needs the low-res "
                             "tokenizer (or the decoded images) to see its tokens")
        images = decode_tokens(tokenizer, np.asarray(lowres_tokens_BxM))
    return to_float(images)
