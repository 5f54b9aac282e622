"""The base masked transformer (Muse §2.3) and the masked-token core super-res reuses (§2.4).

Masked image tokens are embedded, given learned positions, and passed through blocks that
cross-attend to the projected text; a head gives codebook logits. ``encode_condition``
computes what the blocks attend to (constant while an image is decoded); ``logits`` uses it.
Calls take ONE example (Equinox's convention) or a batch along one leading axis (``*B``):
training passes the whole batch, whose 2-D products XLA's CPU backend differentiates faster.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from muse_mini.config import TransformerConfig
from muse_mini.models.layers import BlockStack, Embedding, LayerNorm, LearnedPositions, Linear, compute_dtype, normals

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
    """cuDNN's fused attention runs only on NVIDIA GPUs in 16-bit compute: say so now."""
    if cfg.attention != "cudnn":
        return
    backend = jax.default_backend()
    if backend != "gpu" or cfg.dtype not in ("bfloat16", "float16"):
        raise ValueError(
            f"{type(cfg).__name__}.attention='cudnn': needs an NVIDIA GPU backend (this one is {backend!r}) "
            f"and bfloat16 or float16 compute (dtype is {cfg.dtype!r}); use attention='xla'")


class MaskedTokenTransformer(eqx.Module):
    """Masked image tokens in, codebook logits out, cross-attending to a context already
    projected to ``width`` (text; for super-res, low-res features + text). ``[MASK]`` is ``vocab_size``."""

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

    def __call__(
        self,
        tokens: Int[Array, "*B N"],
        context: Float[Array, "*B S W"],
        context_mask: Bool[Array, "*B S"],
        *,
        extra: Float[Array, "*B N W"] | None = None,
        key=None,
    ) -> Float[Array, "*B N V"]:
        """Logits; ``extra`` is added to the input embeddings."""
        if tokens.ndim not in (1, 2) or tokens.shape[-1] != self.seq_len:
            raise ValueError(
                f"tokens: expected shape ({self.seq_len},) for one example or (batch, {self.seq_len}), "
                f"got {tuple(tokens.shape)}"
            )
        dt = compute_dtype(self.dtype)
        x = self.token_embed(tokens, dt) + self.pos_embed(dt)
        if extra is not None:
            x = x + extra.astype(dt)
        x = self.blocks(x, context, context_mask, key=key)
        return self.head(self.norm(x)).astype(jnp.float32)


class Condition(eqx.Module):
    """An encoded condition: the context the blocks cross-attend to, its key mask, and an
    optional per-token term added to the input embeddings (super-res's skip, §2.4)."""

    context: Float[Array, "*B S W"]
    context_mask: Bool[Array, "*B S"]
    extra: Float[Array, "*B N W"] | None = None


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

    ``vocab_size`` is the codebook size (``mask_id = vocab_size``); ``text_width`` the text
    encoder's width, projected to ``cfg.width`` ("we retain all text tokens", §2.3).
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
        tokens: Int[Array, "*B N"],
        text: Float[Array, "*B L D"],
        text_mask: Bool[Array, "*B L"],
        *,
        key=None,
    ) -> Float[Array, "*B N V"]:
        """Logits (float32); dropout only when ``key`` is given."""
        check_same_batch(tokens=tokens, text=text[..., 0])
        return self.logits(tokens, self.encode_condition(text, text_mask), key=key)

    def encode_condition(self, text: Float[Array, "*B L D"], text_mask: Bool[Array, "*B L"]) -> Condition:
        """The text projected to the model width (§2.3): what every decoding step attends to."""
        projected = project_text(self.text_proj, text, text_mask, self.text_width, self.decoder.dtype)
        return Condition(projected, text_mask)

    def logits(self, tokens: Int[Array, "*B N"], cond: Condition, *, key=None) -> Float[Array, "*B N V"]:
        """Logits for masked tokens given an encoded condition (:meth:`encode_condition`)."""
        return self.decoder(tokens, cond.context, cond.context_mask, extra=cond.extra, key=key)


def check_same_batch(**inputs) -> None:
    """Per-example inputs, given as ``name=array`` with one trailing non-batch axis, agree on batching."""
    leading = {name: tuple(x.shape[:-1]) for name, x in inputs.items()}
    if len(set(leading.values())) > 1:
        shown = ", ".join(f"{name} {shape or 'none'}" for name, shape in leading.items())
        raise ValueError(f"inputs: give one example or the same batch of each; leading axes are {shown}")


def project_text(proj: Linear, text, text_mask, text_width: int, dtype: str):
    """Check the text's shape and project it to the transformer width in the compute dtype."""
    if text.ndim not in (2, 3) or text.shape[-1] != text_width or text_mask.shape != text.shape[:-1]:
        raise ValueError(
            f"text: expected (L, {text_width}) embeddings with an (L,) mask for one example "
            f"(or both with a leading batch axis), got {tuple(text.shape)} and {tuple(text_mask.shape)}"
        )
    return proj(text.astype(compute_dtype(dtype)))
