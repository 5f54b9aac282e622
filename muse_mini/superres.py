"""The super-resolution token translator (Muse §2.4, Figure 4, Table 6).

A ``16×16`` low-res token map (from the base model, or the low-res VQGAN at
training time) is translated into a ``64×64`` high-res map for the f=8 VQGAN.
Figure 4: the low-res tokens pass through ``lowres_depth`` self-attention-only
layers; their output embeddings are concatenated (along the sequence) with the
projected text, and the high-res masked transformer — the same blocks as the
base model — cross-attends to that concatenation. Training masks high-res tokens
at arccos rates and drops the text on 10% of examples; the low-res
conditioning is always kept (it is the input being translated).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from muse_mini.config import SuperResConfig
from muse_mini.transformer import (
    BlockStack, Embedding, LayerNorm, LearnedPositions, Linear, MaskedTokenTransformer,
    check_same_batch, compute_dtype, masked_prediction_loss, project_text,
)


class SuperResTransformer(eqx.Module):
    """Masked high-res tokens + low-res tokens + text → high-res codebook logits.

    ``vocab_size``/``seq_len`` are the high-res tokenizer's codebook and
    ``grid²``; ``lowres_vocab_size``/``lowres_seq_len`` the low-res one's. The
    low-res tokens are always complete, so their table has no ``[MASK]`` row;
    the high-res ``mask_id`` is ``vocab_size``.

    With ``cfg.lowres_skip`` each low-res encoder output is also added to the
    input embeddings of the high-res tokens it covers (a 2×2 block when the
    grids are 8 and 16). Figure 4 has cross-attention only, which must learn
    from scratch which low-res keys sit above each high-res query; the toy
    model did not learn that in 1500 steps and decoded every image to
    white (docs/results.md). The skip hands it the alignment; the paper
    presets keep it off.
    """

    lowres_embed: Embedding
    lowres_pos: LearnedPositions
    lowres_encoder: BlockStack
    lowres_norm: LayerNorm
    text_proj: Linear
    decoder: MaskedTokenTransformer
    lowres_vocab_size: int = eqx.field(static=True)
    lowres_seq_len: int = eqx.field(static=True)
    text_width: int = eqx.field(static=True)
    lowres_skip: bool = eqx.field(static=True)

    def __init__(
        self, cfg: SuperResConfig, *, vocab_size: int, seq_len: int, lowres_vocab_size: int,
        lowres_seq_len: int, text_width: int, key,
    ):
        k_emb, k_pos, k_enc, k_text, k_dec = jax.random.split(key, 5)
        self.lowres_embed = Embedding(lowres_vocab_size, cfg.width, key=k_emb)
        self.lowres_pos = LearnedPositions(lowres_seq_len, cfg.width, key=k_pos)
        self.lowres_encoder = BlockStack(
            cfg.lowres_depth, cfg.width, cfg.mlp_dim, cfg.num_heads, cross=False,
            dropout=cfg.dropout, remat=cfg.remat, key=k_enc,
        )
        # Pre-LN blocks leave the residual stream un-normalised; normalise it
        # before every high-res layer attends to it.
        self.lowres_norm = LayerNorm(cfg.width)
        self.text_proj = Linear(text_width, cfg.width, ("text_embed", "embed"), key=k_text)
        self.decoder = MaskedTokenTransformer(cfg, vocab_size=vocab_size, seq_len=seq_len, key=k_dec)
        self.lowres_vocab_size = lowres_vocab_size
        self.lowres_seq_len = lowres_seq_len
        self.text_width = text_width
        self.lowres_skip = cfg.lowres_skip
        if cfg.lowres_skip:
            _grid_ratio(lowres_seq_len, seq_len)

    @property
    def mask_id(self) -> int:
        return self.decoder.mask_id

    @property
    def vocab_size(self) -> int:
        return self.decoder.vocab_size

    @property
    def seq_len(self) -> int:
        return self.decoder.seq_len

    def encode_lowres(self, lowres_M: Int[Array, " M"], *, key=None) -> Float[Array, "M D"]:
        """The low-res encoder of Figure 4: embedded tokens through self-attention layers."""
        if lowres_M.ndim not in (1, 2) or lowres_M.shape[-1] != self.lowres_seq_len:
            raise ValueError(
                f"lowres: expected shape ({self.lowres_seq_len},) for one example or "
                f"(batch, {self.lowres_seq_len}), got {tuple(lowres_M.shape)}"
            )
        dt = compute_dtype(self.decoder.dtype)
        low_MxD = self.lowres_embed(lowres_M, dt) + self.lowres_pos(dt)
        return self.lowres_norm(self.lowres_encoder(low_MxD, key=key))

    def __call__(
        self,
        tokens_N: Int[Array, " N"],
        lowres_M: Int[Array, " M"],
        text_LxD: Float[Array, "L D"],
        text_mask_L: Bool[Array, " L"],
        *,
        key=None,
    ) -> Float[Array, "N V"]:
        """Logits (float32) for one example or a batch; dropout only when ``key`` is given."""
        enc_key, dec_key = (None, None) if key is None else jax.random.split(key)
        check_same_batch(tokens=tokens_N, lowres=lowres_M, text=text_LxD[..., 0])
        low_MxW = self.encode_lowres(lowres_M, key=enc_key)
        text_LxW = project_text(self.text_proj, text_LxD, text_mask_L, self.text_width, self.decoder.dtype)
        context_SxW = jnp.concatenate([low_MxW, text_LxW], axis=-2)
        context_mask_S = jnp.concatenate([jnp.ones(lowres_M.shape, bool), text_mask_L], axis=-1)
        extra = _upsample_grid(low_MxW, self.seq_len) if self.lowres_skip else None
        return self.decoder(tokens_N, context_SxW, context_mask_S, extra_NxD=extra, key=dec_key)


def _grid_ratio(lowres_seq_len: int, seq_len: int) -> tuple[int, int]:
    """``(low-res side, high-res side / low-res side)`` of two square token grids."""
    m, n = math.isqrt(lowres_seq_len), math.isqrt(seq_len)
    if m * m != lowres_seq_len or n * n != seq_len or n % m:
        raise ValueError(f"lowres_skip: needs square grids, the high-res side a multiple of the low-res one; "
                         f"got {lowres_seq_len} and {seq_len} tokens")
    return m, n // m


def _upsample_grid(x_MxD: Array, seq_len: int) -> Array:
    """Flattened ``m×m`` grid features → the ``n×n`` grid, each cell repeated ``(n/m)²`` times."""
    m, r = _grid_ratio(x_MxD.shape[-2], seq_len)
    grid = x_MxD.reshape(*x_MxD.shape[:-2], m, m, x_MxD.shape[-1])
    grid = jnp.repeat(jnp.repeat(grid, r, axis=-3), r, axis=-2)
    return grid.reshape(*x_MxD.shape[:-2], seq_len, x_MxD.shape[-1])


def superres_loss(
    model: SuperResTransformer, tokens_BxN, lowres_BxM, text_BxLxD, text_mask_BxL, key, *, cond_drop: float,
):
    """Super-res training loss (§2.4): arccos-masked high-res tokens, text dropped on
    ``cond_drop`` of examples, low-res kept. Returns ``(loss, metrics)`` as
    :func:`muse_mini.transformer.masked_token_loss`.
    """

    def predict(inputs_BxN, text_mask_BxL, key):
        return model(inputs_BxN, lowres_BxM, text_BxLxD, text_mask_BxL, key=key)  # the whole batch

    return masked_prediction_loss(
        predict, tokens_BxN, text_mask_BxL, key, mask_id=model.mask_id, cond_drop=cond_drop
    )
