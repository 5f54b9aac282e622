"""BERT encoder in Equinox: all-MiniLM-L6-v2 (22M), the laptop stand-in for Muse's frozen T5-XXL (§2.1).

Unlike T5: learned absolute positions and token types, post-LN with biases, biased linears,
exact GELU and logits scaled by 1/sqrt(d_head). Blocks are scanned as in ``t5``.
"""

from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from muse_mini.models.text.t5 import ACTIVATIONS, apply_linear, self_attention, set_leaf, stack_layers


def _layer_norm(x_LxD: Array, norm: eqx.nn.LayerNorm) -> Array:
    return jax.vmap(norm)(x_LxD)


class BertBlock(eqx.Module):
    """Post-LN block: ``LN(x + attn(x))`` then ``LN(x + ffn(x))``."""

    q: eqx.nn.Linear
    k: eqx.nn.Linear
    v: eqx.nn.Linear
    o: eqx.nn.Linear
    attn_norm: eqx.nn.LayerNorm
    ff_in: eqx.nn.Linear
    ff_out: eqx.nn.Linear
    ff_norm: eqx.nn.LayerNorm
    num_heads: int = eqx.field(static=True)
    act: str = eqx.field(static=True)

    def __init__(self, cfg, *, dtype, key: PRNGKeyArray):
        kq, kk, kv, ko, ki, kf = jr.split(key, 6)
        D, F, eps = cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps
        self.q = eqx.nn.Linear(D, D, dtype=dtype, key=kq)
        self.k = eqx.nn.Linear(D, D, dtype=dtype, key=kk)
        self.v = eqx.nn.Linear(D, D, dtype=dtype, key=kv)
        self.o = eqx.nn.Linear(D, D, dtype=dtype, key=ko)
        self.attn_norm = eqx.nn.LayerNorm(D, eps=eps, dtype=dtype)
        self.ff_in = eqx.nn.Linear(D, F, dtype=dtype, key=ki)
        self.ff_out = eqx.nn.Linear(F, D, dtype=dtype, key=kf)
        self.ff_norm = eqx.nn.LayerNorm(D, eps=eps, dtype=dtype)
        self.num_heads = cfg.num_attention_heads
        if cfg.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act={cfg.hidden_act!r}")
        self.act = cfg.hidden_act

    def __call__(self, x_LxD: Float[Array, "L D"], mask_L: Bool[Array, " L"]) -> Float[Array, "L D"]:
        scale = 1 / np.sqrt(x_LxD.shape[1] // self.num_heads)
        attn_LxD = self_attention(x_LxD, self.q, self.k, self.v, self.num_heads, mask_L, scale=scale)
        x_LxD = _layer_norm(x_LxD + apply_linear(self.o, attn_LxD), self.attn_norm)
        h_LxF = ACTIVATIONS[self.act](apply_linear(self.ff_in, x_LxD))
        return _layer_norm(x_LxD + apply_linear(self.ff_out, h_LxF), self.ff_norm)


class BertEncoder(eqx.Module):
    """Token ids of ONE prompt -> per-token embeddings (Muse §2.1). Batch with ``jax.vmap``."""

    word: eqx.nn.Embedding
    position: eqx.nn.Embedding
    token_type: eqx.nn.Embedding
    embed_norm: eqx.nn.LayerNorm
    blocks: BertBlock  # every leaf has a leading num_layers axis
    num_layers: int = eqx.field(static=True)

    def __init__(self, cfg, *, dtype=jnp.float32, key: PRNGKeyArray):
        kw, kp, kt, kb = jr.split(key, 4)
        D = cfg.hidden_size
        self.word = eqx.nn.Embedding(cfg.vocab_size, D, dtype=dtype, key=kw)
        self.position = eqx.nn.Embedding(cfg.max_position_embeddings, D, dtype=dtype, key=kp)
        self.token_type = eqx.nn.Embedding(cfg.type_vocab_size, D, dtype=dtype, key=kt)
        self.embed_norm = eqx.nn.LayerNorm(D, eps=cfg.layer_norm_eps, dtype=dtype)
        make_block = lambda k: BertBlock(cfg, dtype=dtype, key=k)
        self.blocks = eqx.filter_vmap(make_block)(jr.split(kb, cfg.num_hidden_layers))
        self.num_layers = cfg.num_hidden_layers

    @property
    def dim(self) -> int:
        return self.word.weight.shape[-1]

    def __call__(
        self, ids_L: Int[Array, " L"], mask_L: Bool[Array, " L"], *, key=None
    ) -> Float[Array, "L D"]:
        L = ids_L.shape[0]
        # Single-segment prompts: token type 0 everywhere.
        x_LxD = self.word.weight[ids_L] + self.token_type.weight[0] + self.position.weight[:L]
        x_LxD = _layer_norm(x_LxD, self.embed_norm)
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def step(x_LxD, block_params):
            return eqx.combine(block_params, static)(x_LxD, mask_L), None

        x_LxD, _ = jax.lax.scan(step, x_LxD, params)
        return x_LxD


def from_config(cfg, *, dtype=jnp.float32, key: PRNGKeyArray) -> BertEncoder:
    """Randomly initialised encoder for a ``transformers.BertConfig``; see ``load_weights``."""
    return BertEncoder(cfg, dtype=dtype, key=key)


# eqx.nn.Linear stores weight as (out, in), like torch.nn.Linear: no transposes.
_BLOCK_WEIGHTS: list[tuple[Callable[[BertBlock], Array], str]] = [
    (lambda b: b.q.weight, "attention.self.query.weight"),
    (lambda b: b.q.bias, "attention.self.query.bias"),
    (lambda b: b.k.weight, "attention.self.key.weight"),
    (lambda b: b.k.bias, "attention.self.key.bias"),
    (lambda b: b.v.weight, "attention.self.value.weight"),
    (lambda b: b.v.bias, "attention.self.value.bias"),
    (lambda b: b.o.weight, "attention.output.dense.weight"),
    (lambda b: b.o.bias, "attention.output.dense.bias"),
    (lambda b: b.attn_norm.weight, "attention.output.LayerNorm.weight"),
    (lambda b: b.attn_norm.bias, "attention.output.LayerNorm.bias"),
    (lambda b: b.ff_in.weight, "intermediate.dense.weight"),
    (lambda b: b.ff_in.bias, "intermediate.dense.bias"),
    (lambda b: b.ff_out.weight, "output.dense.weight"),
    (lambda b: b.ff_out.bias, "output.dense.bias"),
    (lambda b: b.ff_norm.weight, "output.LayerNorm.weight"),
    (lambda b: b.ff_norm.bias, "output.LayerNorm.bias"),
]

_EMBED_WEIGHTS: list[tuple[Callable[[BertEncoder], Array], str]] = [
    (lambda m: m.word.weight, "embeddings.word_embeddings.weight"),
    (lambda m: m.position.weight, "embeddings.position_embeddings.weight"),
    (lambda m: m.token_type.weight, "embeddings.token_type_embeddings.weight"),
    (lambda m: m.embed_norm.weight, "embeddings.LayerNorm.weight"),
    (lambda m: m.embed_norm.bias, "embeddings.LayerNorm.bias"),
]


def load_weights(model: BertEncoder, tensors: Mapping[str, np.ndarray]) -> BertEncoder:
    """Fill ``model`` from Hugging Face BERT names, bare or ``bert.``-prefixed; pooler and heads are ignored."""
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""
    for where, name in _EMBED_WEIGHTS:
        model = set_leaf(model, where, tensors[prefix + name], prefix + name)
    for where, suffix in _BLOCK_WEIGHTS:
        stacked = stack_layers(tensors, [f"{prefix}encoder.layer.{i}.{suffix}" for i in range(model.num_layers)])
        model = set_leaf(model, lambda m: where(m.blocks), stacked, f"{prefix}encoder.layer.*.{suffix}")
    return model
