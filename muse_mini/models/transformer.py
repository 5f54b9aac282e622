"""The base masked transformer (Muse §2.3) and the masked-token core super-res reuses (§2.4).

Image tokens (a flattened ``grid × grid`` VQGAN map, some replaced by
``[MASK]``) are embedded, given learned positions, and passed through
pre-LayerNorm blocks of self-attention → cross-attention to the projected
text (the frozen text encoder's embeddings, never masked) → GELU MLP. An
output head maps every position to logits over the VQGAN codebook; training
scores the masked positions only (§2.3, :mod:`muse_mini.training.losses`).

The layers (attention, MLP, blocks, named logical axes) are in
:mod:`muse_mini.models.layers`. An example whose keys are all masked (text
dropped for guidance, §2.7) gets its cross-attention output multiplied by 0,
so the block is exactly a block without cross-attention.

A model's condition (the projected text; for super-res also the encoded
low-res tokens) is computed by ``encode_condition`` and consumed by
``logits``; ``__call__`` is the two in a row. The condition does not change
while an image is decoded, so samplers encode it once per generation.

Every ``__call__`` takes ONE example, or a batch along one leading axis.
Training calls the model on the whole batch, so its matrix products are flat
2-D products, which XLA's CPU backend differentiates faster than ``jax.vmap``
over examples. Sampling may use either form.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from muse_mini.config import TransformerConfig
from muse_mini.models.layers import (  # noqa: F401  (the layers are re-exported for the models that use them)
    DTYPES, MLP, Attention, Block, BlockStack, Embedding, LayerNorm, LearnedPositions, Linear, Named,
    normals, compute_dtype, count_params, is_axes, logical_axes, sincos_2d,
)

# --------------------------------------------------------------------------
# The masked-token transformer shared by the base and super-res models


class OutputHead(eqx.Module):
    """The output MLP of §2.3: ``Linear → GELU → LayerNorm → Linear`` to codebook logits."""

    dense: Linear
    norm: LayerNorm
    out: Linear

    def __init__(self, width: int, vocab_size: int, *, key):
        w1, w2 = normals(key, (width, width), (width, vocab_size))
        self.dense = Linear(width, width, ("embed", "embed_out"), weight=w1)
        self.norm = LayerNorm(width)
        self.out = Linear(width, vocab_size, ("embed", "vocab"), weight=w2)

    def __call__(self, x_NxD):
        return self.out(self.norm(jax.nn.gelu(self.dense(x_NxD))))


def check_attention_kernel(cfg: TransformerConfig) -> None:
    """A clear error now, not a deep XLA one at the first call: cuDNN's fused attention
    runs only on NVIDIA GPUs and only in 16-bit compute."""
    if cfg.attention != "cudnn":
        return
    backend = jax.default_backend()
    if backend != "gpu" or cfg.dtype not in ("bfloat16", "float16"):
        raise ValueError(
            f"{type(cfg).__name__}.attention='cudnn': needs an NVIDIA GPU backend (this one is {backend!r}) "
            f"and bfloat16 or float16 compute (dtype is {cfg.dtype!r}); use attention='xla'")


class MaskedTokenTransformer(eqx.Module):
    """Masked image tokens in, codebook logits out, cross-attending to a context.

    The context is whatever the model conditions on, already projected to
    ``width``: the text for the base model, low-res features + text for
    super-res. Token id ``vocab_size`` is ``[MASK]``.
    """

    token_embed: Embedding
    pos_embed: LearnedPositions
    blocks: BlockStack
    norm: LayerNorm
    head: OutputHead
    vocab_size: int = eqx.field(static=True)
    seq_len: int = eqx.field(static=True)
    dtype: str = eqx.field(static=True)

    def __init__(self, cfg: TransformerConfig, *, vocab_size: int, seq_len: int, key):
        compute_dtype(cfg.dtype)
        check_attention_kernel(cfg)
        k_tok, k_pos, k_blocks, k_head = jax.random.split(key, 4)
        self.token_embed = Embedding(vocab_size + 1, cfg.width, key=k_tok)
        self.pos_embed = LearnedPositions(seq_len, cfg.width, key=k_pos, init=cfg.pos_init)
        self.blocks = BlockStack(
            cfg.depth, cfg.width, cfg.mlp_dim, cfg.num_heads, cross=True,
            dropout=cfg.dropout, remat=cfg.remat, key=k_blocks, kernel=cfg.attention,
        )
        self.norm = LayerNorm(cfg.width)
        self.head = OutputHead(cfg.width, vocab_size, key=k_head)
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.dtype = cfg.dtype

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def __call__(self, tokens_N, context_SxW, context_mask_S, *, extra_NxW=None, key=None) -> Float[Array, "N V"]:
        """Logits for one example or a batch; ``extra_NxW`` is added to the input embeddings."""
        if tokens_N.ndim not in (1, 2) or tokens_N.shape[-1] != self.seq_len:
            raise ValueError(
                f"tokens: expected shape ({self.seq_len},) for one example or (batch, {self.seq_len}), "
                f"got {tuple(tokens_N.shape)}"
            )
        dt = compute_dtype(self.dtype)
        x_NxD = self.token_embed(tokens_N, dt) + self.pos_embed(dt)
        if extra_NxW is not None:
            x_NxD = x_NxD + extra_NxW.astype(dt)
        x_NxD = self.blocks(x_NxD, context_SxW, context_mask_S, key=key)
        return self.head(self.norm(x_NxD)).astype(jnp.float32)


class Condition(eqx.Module):
    """An encoded condition: the context the blocks cross-attend to, its key mask, and an
    optional per-token term added to the input embeddings (super-res's skip, §2.4)."""

    context_SxW: Array
    context_mask_S: Array
    extra_NxW: Array | None = None


class TokenPredictor(eqx.Module):
    """What the base and super-res models share: a masked-token ``decoder`` and its sizes."""

    decoder: eqx.AbstractVar[MaskedTokenTransformer]

    @property
    def mask_id(self) -> int:
        return self.decoder.mask_id

    @property
    def vocab_size(self) -> int:
        return self.decoder.vocab_size

    @property
    def seq_len(self) -> int:
        return self.decoder.seq_len


class BaseTransformer(TokenPredictor):
    """The base model (Muse §2.3): masked ``grid²`` tokens + T5 text → codebook logits.

    ``vocab_size`` is the tokenizer's codebook size (the logits' width); the
    embedding table has one more row, ``mask_id = vocab_size``. ``seq_len`` is
    ``grid²``; ``text_width`` the text encoder's output width, projected to
    ``cfg.width`` (all text positions are kept, §2.3).
    """

    text_proj: Linear
    decoder: MaskedTokenTransformer
    text_width: int = eqx.field(static=True)

    def __init__(self, cfg: TransformerConfig, *, vocab_size: int, seq_len: int, text_width: int, key):
        k_text, k_dec = jax.random.split(key)
        self.text_proj = Linear(text_width, cfg.width, ("text_embed", "embed"), key=k_text)
        self.decoder = MaskedTokenTransformer(cfg, vocab_size=vocab_size, seq_len=seq_len, key=k_dec)
        self.text_width = text_width

    def __call__(
        self,
        tokens_N: Int[Array, " N"],
        text_LxD: Float[Array, "L D"],
        text_mask_L: Bool[Array, " L"],
        *,
        key=None,
    ) -> Float[Array, "N V"]:
        """Logits (float32) for one example or a batch; dropout only when ``key`` is given."""
        check_same_batch(tokens=tokens_N, text=text_LxD[..., 0])
        return self.logits(tokens_N, self.encode_condition(text_LxD, text_mask_L), key=key)

    def encode_condition(self, text_LxD, text_mask_L) -> Condition:
        """The text projected to the model width (§2.3): what every decoding step attends to.

        It does not change while an image is decoded, so a sampler encodes it
        once per generation and calls :meth:`logits` at every step.
        """
        text_LxW = project_text(self.text_proj, text_LxD, text_mask_L, self.text_width, self.decoder.dtype)
        return Condition(text_LxW, text_mask_L)

    def logits(self, tokens_N, cond: Condition, *, key=None) -> Float[Array, "N V"]:
        """Logits for masked tokens given an encoded condition (:meth:`encode_condition`)."""
        return self.decoder(tokens_N, cond.context_SxW, cond.context_mask_S, extra_NxW=cond.extra_NxW, key=key)


def check_same_batch(**inputs) -> None:
    """Per-example inputs, given as ``name=array`` with one trailing non-batch axis, agree on batching."""
    leading = {name: tuple(x.shape[:-1]) for name, x in inputs.items()}
    if len(set(leading.values())) > 1:
        shown = ", ".join(f"{name} {shape or 'none'}" for name, shape in leading.items())
        raise ValueError(f"inputs: give one example or the same batch of each; leading axes are {shown}")


def project_text(proj: Linear, text_LxD, text_mask_L, text_width: int, dtype: str):
    """Check the text's shape and project it to the transformer width in the compute dtype."""
    if text_LxD.ndim not in (2, 3) or text_LxD.shape[-1] != text_width or text_mask_L.shape != text_LxD.shape[:-1]:
        raise ValueError(
            f"text: expected (L, {text_width}) embeddings with an (L,) mask for one example "
            f"(or both with a leading batch axis), got {tuple(text_LxD.shape)} and {tuple(text_mask_L.shape)}"
        )
    return proj(text_LxD.astype(compute_dtype(dtype)))
