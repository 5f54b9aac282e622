"""T5 encoder stack in Equinox: the frozen text encoder of Muse §2.1 (T5-XXL is T5 v1.1, gated-GELU).

T5's traps: RMS norm without mean or bias; attention logits not scaled by 1/sqrt(d_kv);
positions only as a learned per-head bias on bucketed relative distances, owned by the
first layer and shared by all. Blocks are stacked and run with ``jax.lax.scan``, so
compile time does not grow with depth.
"""

import math
from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    # T5Config maps "gated-gelu" to the tanh approximation ("gelu_new").
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}


def t5_activation(feed_forward_proj: str) -> tuple[str, bool]:
    """Split ``"gated-gelu"`` / ``"relu"`` into (activation name, gated?) as T5Config does."""
    *gate, act = feed_forward_proj.split("-")
    gated = gate == ["gated"]
    if act == "gelu" and gated:
        act = "gelu_new"
    if act not in ACTIVATIONS or gate not in ([], ["gated"]):
        raise ValueError(f"unsupported feed_forward_proj={feed_forward_proj!r}")
    return act, gated


def relative_position_bucket(relative_position: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 bucketing of ``key_pos - query_pos``: exact near, log-spaced far, up to ``max_distance``."""
    num_buckets //= 2
    bucket_offset = np.where(relative_position > 0, num_buckets, 0)
    distance = np.abs(relative_position)
    max_exact = num_buckets // 2
    # float32 like the reference implementation, so bucket edges round the same way.
    # The clamp keeps log(0) out; those distances take the exact branch anyway.
    log_ratio = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
    log_span = np.float32(math.log(max_distance / max_exact))
    large = max_exact + (log_ratio / log_span * np.float32(num_buckets - max_exact)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return bucket_offset + np.where(distance < max_exact, distance, large)


class RMSNorm(eqx.Module):
    """T5 layer norm: scale only, by the root mean square (float32 statistics)."""

    weight: Float[Array, " D"]
    eps: float = eqx.field(static=True)

    def __init__(self, dim: int, eps: float, *, dtype=jnp.float32):
        self.weight = jnp.ones((dim,), dtype)
        self.eps = eps

    def __call__(self, x_LxD: Float[Array, "L D"]) -> Float[Array, "L D"]:
        var_Lx1 = jnp.mean(jnp.square(x_LxD.astype(jnp.float32)), -1, keepdims=True)
        x_LxD = x_LxD * jax.lax.rsqrt(var_Lx1 + self.eps)
        return self.weight * x_LxD.astype(self.weight.dtype)


def _linear(d_in: int, d_out: int, dtype, key: PRNGKeyArray) -> eqx.nn.Linear:
    return eqx.nn.Linear(d_in, d_out, use_bias=False, dtype=dtype, key=key)


def apply_linear(linear: eqx.nn.Linear, x_LxI: Array) -> Array:
    """An ``eqx.nn.Linear`` (one vector in) over every position of a sequence."""
    return jax.vmap(linear)(x_LxI)


def self_attention(x_LxD, q, k, v, num_heads: int, mask_L, *, bias_HxLxL=0.0, scale: float = 1.0) -> Array:
    """Multi-head self-attention over the unmasked keys, heads concatenated (before the output projection)."""
    L = x_LxD.shape[0]
    split = lambda lin: apply_linear(lin, x_LxD).reshape(L, num_heads, -1)
    q_LxHxK, k_LxHxK, v_LxHxK = split(q), split(k), split(v)
    logits_HxLxL = jnp.einsum("qhk,shk->hqs", q_LxHxK, k_LxHxK).astype(jnp.float32) * scale + bias_HxLxL
    # finfo.min rather than -inf keeps an all-padding row finite instead of NaN.
    logits_HxLxL = jnp.where(mask_L, logits_HxLxL, jnp.finfo(jnp.float32).min)
    probs_HxLxL = jax.nn.softmax(logits_HxLxL, axis=-1).astype(v_LxHxK.dtype)
    return jnp.einsum("hqs,shk->qhk", probs_HxLxL, v_LxHxK).reshape(L, -1)


class T5Attention(eqx.Module):
    """Bidirectional self-attention with an additive position bias and no logit scaling."""

    q: eqx.nn.Linear
    k: eqx.nn.Linear
    v: eqx.nn.Linear
    o: eqx.nn.Linear
    num_heads: int = eqx.field(static=True)
    d_kv: int = eqx.field(static=True)

    def __init__(self, d_model: int, num_heads: int, d_kv: int, *, dtype, key: PRNGKeyArray):
        kq, kk, kv, ko = jr.split(key, 4)
        inner = num_heads * d_kv
        self.q = _linear(d_model, inner, dtype, kq)
        self.k = _linear(d_model, inner, dtype, kk)
        self.v = _linear(d_model, inner, dtype, kv)
        self.o = _linear(inner, d_model, dtype, ko)
        self.num_heads, self.d_kv = num_heads, d_kv

    def __call__(
        self,
        x_LxD: Float[Array, "L D"],
        bias_HxLxL: Float[Array, "H L L"],
        mask_L: Bool[Array, " L"],
    ) -> Float[Array, "L D"]:
        out_LxE = self_attention(x_LxD, self.q, self.k, self.v, self.num_heads, mask_L, bias_HxLxL=bias_HxLxL)
        return apply_linear(self.o, out_LxE)


class T5FeedForward(eqx.Module):
    """``wo(act(wi_0 x))`` (T5) or ``wo(act(wi_0 x) * wi_1 x)`` (T5 v1.1, gated)."""

    wi_0: eqx.nn.Linear
    wi_1: eqx.nn.Linear | None
    wo: eqx.nn.Linear
    act: str = eqx.field(static=True)

    def __init__(self, d_model: int, d_ff: int, act: str, gated: bool, *, dtype, key: PRNGKeyArray):
        k0, k1, ko = jr.split(key, 3)
        self.wi_0 = _linear(d_model, d_ff, dtype, k0)
        self.wi_1 = _linear(d_model, d_ff, dtype, k1) if gated else None
        self.wo = _linear(d_ff, d_model, dtype, ko)
        self.act = act

    def __call__(self, x_LxD: Float[Array, "L D"]) -> Float[Array, "L D"]:
        h_LxF = ACTIVATIONS[self.act](apply_linear(self.wi_0, x_LxD))
        if self.wi_1 is not None:
            h_LxF = h_LxF * apply_linear(self.wi_1, x_LxD)
        return apply_linear(self.wo, h_LxF)


class T5Block(eqx.Module):
    """Pre-norm residual block: self-attention, then feed-forward."""

    attn_norm: RMSNorm
    attn: T5Attention
    ff_norm: RMSNorm
    ff: T5FeedForward

    def __init__(self, cfg, *, dtype, key: PRNGKeyArray):
        ka, kf = jr.split(key)
        act, gated = t5_activation(cfg.feed_forward_proj)
        eps = cfg.layer_norm_epsilon
        self.attn_norm = RMSNorm(cfg.d_model, eps, dtype=dtype)
        self.attn = T5Attention(cfg.d_model, cfg.num_heads, cfg.d_kv, dtype=dtype, key=ka)
        self.ff_norm = RMSNorm(cfg.d_model, eps, dtype=dtype)
        self.ff = T5FeedForward(cfg.d_model, cfg.d_ff, act, gated, dtype=dtype, key=kf)

    def __call__(self, x_LxD, bias_HxLxL, mask_L):
        x_LxD = x_LxD + self.attn(self.attn_norm(x_LxD), bias_HxLxL, mask_L)
        return x_LxD + self.ff(self.ff_norm(x_LxD))


class T5Encoder(eqx.Module):
    """Token ids of ONE prompt -> per-token embeddings (Muse §2.1). Batch with ``jax.vmap``."""

    embed: eqx.nn.Embedding
    rel_bias: eqx.nn.Embedding  # (num_buckets, num_heads)
    blocks: T5Block  # every leaf has a leading num_layers axis
    final_norm: RMSNorm
    num_layers: int = eqx.field(static=True)
    num_buckets: int = eqx.field(static=True)
    max_distance: int = eqx.field(static=True)

    def __init__(self, cfg, *, dtype=jnp.float32, key: PRNGKeyArray):
        ke, kr, kb = jr.split(key, 3)
        self.embed = eqx.nn.Embedding(cfg.vocab_size, cfg.d_model, dtype=dtype, key=ke)
        self.rel_bias = eqx.nn.Embedding(
            cfg.relative_attention_num_buckets, cfg.num_heads, dtype=dtype, key=kr
        )
        make_block = lambda k: T5Block(cfg, dtype=dtype, key=k)
        self.blocks = eqx.filter_vmap(make_block)(jr.split(kb, cfg.num_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, dtype=dtype)
        self.num_layers = cfg.num_layers
        self.num_buckets = cfg.relative_attention_num_buckets
        self.max_distance = cfg.relative_attention_max_distance

    @property
    def dim(self) -> int:
        return self.embed.weight.shape[-1]

    def position_bias(self, length: int) -> Float[Array, "H L L"]:
        pos_L = np.arange(length)
        buckets_LxL = relative_position_bucket(
            pos_L[None, :] - pos_L[:, None], self.num_buckets, self.max_distance
        )
        return jnp.moveaxis(self.rel_bias.weight[buckets_LxL], -1, 0).astype(jnp.float32)

    def __call__(
        self, ids_L: Int[Array, " L"], mask_L: Bool[Array, " L"], *, key=None
    ) -> Float[Array, "L D"]:
        x_LxD = self.embed.weight[ids_L]
        bias_HxLxL = self.position_bias(ids_L.shape[0])
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def step(x_LxD, block_params):
            block = eqx.combine(block_params, static)
            return block(x_LxD, bias_HxLxL, mask_L), None

        x_LxD, _ = jax.lax.scan(step, x_LxD, params)
        return self.final_norm(x_LxD)


def from_config(cfg, *, dtype=jnp.float32, key: PRNGKeyArray) -> T5Encoder:
    """Randomly initialised encoder for a ``transformers.T5Config``; see ``load_weights``."""
    return T5Encoder(cfg, dtype=dtype, key=key)


def _block_weights(gated: bool) -> list[tuple[Callable[[T5Block], Array], str]]:
    # eqx.nn.Linear stores weight as (out, in), the same layout as torch.nn.Linear,
    # so checkpoint matrices need no transpose.
    table = [
        (lambda b: b.attn_norm.weight, "layer.0.layer_norm.weight"),
        (lambda b: b.attn.q.weight, "layer.0.SelfAttention.q.weight"),
        (lambda b: b.attn.k.weight, "layer.0.SelfAttention.k.weight"),
        (lambda b: b.attn.v.weight, "layer.0.SelfAttention.v.weight"),
        (lambda b: b.attn.o.weight, "layer.0.SelfAttention.o.weight"),
        (lambda b: b.ff_norm.weight, "layer.1.layer_norm.weight"),
        (lambda b: b.ff.wo.weight, "layer.1.DenseReluDense.wo.weight"),
    ]
    if gated:
        table += [
            (lambda b: b.ff.wi_0.weight, "layer.1.DenseReluDense.wi_0.weight"),
            (lambda b: b.ff.wi_1.weight, "layer.1.DenseReluDense.wi_1.weight"),
        ]
    else:
        table += [(lambda b: b.ff.wi_0.weight, "layer.1.DenseReluDense.wi.weight")]
    return table


def set_leaf(model, where: Callable, value: np.ndarray, name: str):
    """Replace one array leaf, checking the shape, and cast to the leaf's dtype."""
    old = where(model)
    if tuple(value.shape) != tuple(old.shape):
        raise ValueError(f"{name}: checkpoint shape {value.shape} != model shape {old.shape}")
    return eqx.tree_at(where, model, jnp.asarray(value, dtype=old.dtype))


def stack_layers(tensors: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray:
    """The named per-layer tensors as one ``(layers, ...)`` array, filled a layer at a time (one copy in memory)."""
    first = np.asarray(tensors[names[0]])
    stacked = np.empty((len(names), *first.shape), first.dtype)
    for i, name in enumerate(names):
        stacked[i] = tensors[name]
    return stacked


def load_weights(model: T5Encoder, tensors: Mapping[str, np.ndarray]) -> T5Encoder:
    """Fill ``model`` from Hugging Face T5 tensor names; decoder and LM-head weights are ignored."""
    embed_name = "shared.weight" if "shared.weight" in tensors else "encoder.embed_tokens.weight"
    model = set_leaf(model, lambda m: m.embed.weight, tensors[embed_name], embed_name)
    name = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    model = set_leaf(model, lambda m: m.rel_bias.weight, tensors[name], name)
    name = "encoder.final_layer_norm.weight"
    model = set_leaf(model, lambda m: m.final_norm.weight, tensors[name], name)
    for where, suffix in _block_weights(model.blocks.ff.wi_1 is not None):
        stacked = stack_layers(tensors, [f"encoder.block.{i}.{suffix}" for i in range(model.num_layers)])
        model = set_leaf(model, lambda m: where(m.blocks), stacked, f"encoder.block.*.{suffix}")
    return model
