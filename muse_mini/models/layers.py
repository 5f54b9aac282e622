"""Transformer layers that name their logical axes (Muse §2.3), shared by base and super-res.

Each weight lives in a :class:`Named` module that names its axes (``embed``, ``mlp``,
``heads``, ``vocab``...); :func:`logical_axes` gives them to the sharding rules table.
Parameters are float32, cast to the compute dtype where used. :class:`BlockStack`
scans its blocks, so compile time does not grow with depth.
"""

from __future__ import annotations

import abc
import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from muse_mini.config import POSITION_INITS
from muse_mini.models.constraints import LayoutHints


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str):
    if name not in DTYPES:
        raise ValueError(f"dtype: unknown compute dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def _normal(key, shape, std: float = 0.02):
    # BERT/ViT-style truncated normal; parameters are always float32.
    return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)


def normals(key, *shapes, std: float = 0.02):
    """Several i.i.d. weight tensors from ONE draw (each draw compiles apart: slow on CPU)."""
    sizes = [math.prod(s) for s in shapes]
    flat = _normal(key, (sum(sizes),), std)
    offsets = [0, *itertools.accumulate(sizes)]
    return [flat[a:b].reshape(s) for a, b, s in zip(offsets, offsets[1:], shapes)]


def _flat_matmul(x_xI, w_IxO):
    # One 2-D product: XLA's CPU backend differentiates a 3-D one up to 3x slower.
    y = x_xI.reshape(-1, x_xI.shape[-1]) @ w_IxO
    return y.reshape(*x_xI.shape[:-1], w_IxO.shape[-1])


def _dropout(x, rate: float, key):
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


# --------------------------------------------------------------------------
# Parameter-owning modules, each naming the logical axes of its weights


class Named(eqx.Module):
    """A module owning weights whose axes have logical names (for sharding)."""

    @abc.abstractmethod
    def param_axes(self) -> dict[str, tuple[str, ...]]:
        """Field name → logical axis names of that weight (without ``layers``)."""


class Linear(Named):
    """``x @ W + b``, W ``(in, out)``; ``weight=`` passes one drawn by :func:`normals`."""

    weight: Float[Array, "in out"]
    bias: Float[Array, " out"]
    axes: tuple[str, str] = eqx.field(static=True)

    def __init__(self, in_dim: int, out_dim: int, axes: tuple[str, str], *, key=None, weight=None):
        if (key is None) == (weight is None):
            raise ValueError("Linear: pass exactly one of key= and weight=")
        self.weight = _normal(key, (in_dim, out_dim)) if weight is None else weight
        self.bias = jnp.zeros((out_dim,), jnp.float32)
        self.axes = axes

    def __call__(self, x_xI):
        return _flat_matmul(x_xI, self.weight.astype(x_xI.dtype)) + self.bias.astype(x_xI.dtype)

    def param_axes(self):
        return {"weight": self.axes, "bias": self.axes[1:]}


class Embedding(Named):
    """A lookup table ``(num, width)``; rows are gathered, then cast.

    On a mesh, ``layout.gathered`` makes the table whole first: rows of a table split
    along its width could become a batch split only by replicating them.
    """

    weight: Float[Array, "num width"]
    axes: tuple[str, str] = eqx.field(static=True)
    layout: LayoutHints | None = eqx.field(static=True)  # None; a mesh's by constraints.with_layout

    def __init__(self, num: int, width: int, axes: tuple[str, str] = ("vocab", "embed"), *, key):
        self.weight = _normal(key, (num, width))
        self.axes = axes
        self.layout = None

    def __call__(self, ids: Int[Array, "*batch N"], dtype) -> Array:
        weight = self.weight if self.layout is None else self.layout.gathered(self.weight)
        return jnp.take(weight, ids, axis=0).astype(dtype)

    def param_axes(self):
        return {"weight": self.axes}


def sincos_2d(grid: int, width: int) -> Float[Array, "seq width"]:
    """2D sine-cosine features of a ``grid × grid`` map, row-major: half the channels
    encode the row, half the column; the grid spans 16 units whatever its size."""
    if width % 4:
        raise ValueError(f"sincos positions: width must be divisible by 4, got {width}")
    freqs = 1.0 / 10000.0 ** (jnp.arange(width // 4) / (width // 4))
    angles = (jnp.arange(grid) * (16.0 / grid))[:, None] * freqs[None, :]
    axis_GxH = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    rows = jnp.broadcast_to(axis_GxH[:, None, :], (grid, grid, width // 2))
    cols = jnp.broadcast_to(axis_GxH[None, :, :], (grid, grid, width // 2))
    return jnp.concatenate([rows, cols], axis=-1).reshape(grid * grid, width)


class LearnedPositions(Named):
    """The "learned 2D positional embeddings" of §2.3: one free vector per grid cell.

    ``init="sincos"`` starts the table from :func:`sincos_2d` at the same 0.02 RMS,
    so neighbouring cells start alike; it stays learned.
    """

    table: Float[Array, "seq width"]

    def __init__(self, seq_len: int, width: int, *, key, init: str = "normal"):
        if init not in POSITION_INITS:
            raise ValueError(f"pos_init: expected one of {POSITION_INITS}, got {init!r}")
        if init == "normal":
            self.table = _normal(key, (seq_len, width))
            return
        grid = math.isqrt(seq_len)
        if grid * grid != seq_len:
            raise ValueError(f"pos_init='sincos' needs a square token grid, got {seq_len} positions")
        table = sincos_2d(grid, width)
        self.table = 0.02 * table / jnp.sqrt(jnp.mean(jnp.square(table)))

    def __call__(self, dtype) -> Array:
        return self.table.astype(dtype)

    def param_axes(self):
        return {"table": ("seq", "embed")}


class LayerNorm(Named):
    """LayerNorm over the last axis, statistics in float32, output in the input dtype."""

    scale: Float[Array, " width"]
    bias: Float[Array, " width"]
    eps: float = eqx.field(static=True)

    def __init__(self, width: int, eps: float = 1e-6):
        self.scale = jnp.ones((width,), jnp.float32)
        self.bias = jnp.zeros((width,), jnp.float32)
        self.eps = eps

    def __call__(self, x_xD):
        x32 = x_xD.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * self.scale + self.bias
        return y.astype(x_xD.dtype)

    def param_axes(self):
        return {"scale": ("embed",), "bias": ("embed",)}


class Attention(Named):
    """Multi-head attention, queries from ``x``, keys/values from ``context`` (= x for self).
    Projections are per head (``embed × heads × kv``) so tensor parallelism can split heads."""

    q_proj: Float[Array, "embed heads kv"]
    k_proj: Float[Array, "embed heads kv"]
    v_proj: Float[Array, "embed heads kv"]
    o_proj: Float[Array, "heads kv embed"]
    q_bias: Float[Array, "heads kv"]
    k_bias: Float[Array, "heads kv"]
    v_bias: Float[Array, "heads kv"]
    o_bias: Float[Array, " embed"]
    num_heads: int = eqx.field(static=True)
    kernel: str = eqx.field(static=True)  # jax.nn.dot_product_attention's implementation

    def __init__(self, width: int, num_heads: int, *, key, kernel: str = "xla"):
        if width % num_heads:
            raise ValueError(f"attention: width {width} is not divisible by num_heads {num_heads}")
        head_dim = width // num_heads
        proj = (width, num_heads, head_dim)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = normals(
            key, proj, proj, proj, (num_heads, head_dim, width)
        )
        zeros = jnp.zeros((num_heads, head_dim), jnp.float32)
        self.q_bias, self.k_bias, self.v_bias = zeros, zeros, zeros
        self.o_bias = jnp.zeros((width,), jnp.float32)
        self.num_heads = num_heads
        self.kernel = kernel

    def __call__(self, x_TxD, context_SxD, mask_S: Bool[Array, " S"] | None = None):
        """One example (``T×D``, ``S×D``, ``S``) or a batch with a leading axis."""
        dt = x_TxD.dtype

        def project(a_xD, w, b):
            d, h, k = w.shape
            y = _flat_matmul(a_xD, w.reshape(d, h * k).astype(dt))
            return y.reshape(*a_xD.shape[:-1], h, k) + b.astype(dt)

        q_TxHxK = project(x_TxD, self.q_proj, self.q_bias)
        k_SxHxK = project(context_SxD, self.k_proj, self.k_bias)
        v_SxHxK = project(context_SxD, self.v_proj, self.v_bias)
        # A key mask broadcast over heads and queries: (..., 1, 1, S) → (..., heads, T, S).
        mask = None if mask_S is None else mask_S[..., None, None, :]
        # cuDNN takes a key mask only as a per-head (T, S) bias, unbatchable under vmap: masked attention stays XLA.
        kernel = self.kernel if mask is None else "xla"
        out_TxHxK = jax.nn.dot_product_attention(q_TxHxK, k_SxHxK, v_SxHxK, mask=mask, implementation=kernel)
        h, k, d = self.o_proj.shape
        out_xHK = out_TxHxK.reshape(*out_TxHxK.shape[:-2], h * k)
        return _flat_matmul(out_xHK, self.o_proj.reshape(h * k, d).astype(dt)) + self.o_bias.astype(dt)

    def param_axes(self):
        proj, bias = ("embed", "heads", "kv"), ("heads", "kv")
        return {
            "q_proj": proj, "k_proj": proj, "v_proj": proj, "o_proj": ("heads", "kv", "embed"),
            "q_bias": bias, "k_bias": bias, "v_bias": bias, "o_bias": ("embed",),
        }


class MLP(eqx.Module):
    """``Linear → GELU → Linear`` with hidden size ``mlp_dim``."""

    fc1: Linear
    fc2: Linear

    def __init__(self, width: int, mlp_dim: int, *, key):
        w1, w2 = normals(key, (width, mlp_dim), (mlp_dim, width))
        self.fc1 = Linear(width, mlp_dim, ("embed", "mlp"), weight=w1)
        self.fc2 = Linear(mlp_dim, width, ("mlp", "embed"), weight=w2)

    def __call__(self, x_NxD):
        return self.fc2(jax.nn.gelu(self.fc1(x_NxD)))


def logical_axes(tree):
    """Each weight of ``tree`` as its tuple of axis names (``layers`` for stacking);
    iterate with ``jax.tree.leaves(axes, is_leaf=is_axes)``."""

    def name(node):
        if not isinstance(node, Named):
            if hasattr(node, "shape"):
                raise TypeError(f"logical_axes: array of shape {node.shape} outside a Named module")
            return node
        axes = node.param_axes()
        fields = list(axes)
        names = []
        for field in fields:
            extra = len(getattr(node, field).shape) - len(axes[field])
            names.append(("layers",) * extra + tuple(axes[field]))
        return eqx.tree_at(lambda m: [getattr(m, f) for f in fields], node, names)

    return jax.tree.map(name, tree, is_leaf=lambda x: isinstance(x, Named))


def is_axes(x) -> bool:
    """True for the tuples of axis names that :func:`logical_axes` puts at the leaves."""
    return isinstance(x, tuple) and all(isinstance(n, str) for n in x)


def is_array_like(x) -> bool:
    """True for an array leaf, real or abstract (``eqx.filter_eval_shape``'s ``ShapeDtypeStruct``)."""
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) or eqx.is_array(x)


def count_params(module) -> int:
    """Number of scalars in ``module``'s arrays; works on ``eqx.filter_eval_shape`` output."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(module) if hasattr(x, "shape"))


# --------------------------------------------------------------------------
# Blocks and the scanned stack


class Block(eqx.Module):
    """Pre-LN block: self-attention → cross-attention (None in super-res's low-res
    encoder, §2.4) → MLP (§2.3)."""

    self_norm: LayerNorm
    self_attn: Attention
    cross_norm: LayerNorm | None
    cross_attn: Attention | None
    mlp_norm: LayerNorm
    mlp: MLP
    dropout: float = eqx.field(static=True)

    def __init__(self, width: int, mlp_dim: int, num_heads: int, *, cross: bool, dropout: float = 0.0, key,
                 kernel: str = "xla"):
        k_self, k_cross, k_mlp = jax.random.split(key, 3)
        self.self_norm = LayerNorm(width)
        self.self_attn = Attention(width, num_heads, key=k_self, kernel=kernel)
        self.cross_norm = LayerNorm(width) if cross else None
        self.cross_attn = Attention(width, num_heads, key=k_cross, kernel=kernel) if cross else None
        self.mlp_norm = LayerNorm(width)
        self.mlp = MLP(width, mlp_dim, key=k_mlp)
        self.dropout = dropout

    def __call__(self, x_NxD, context_SxD=None, context_mask_S=None, *, key=None):
        k1, k2, k3 = (None,) * 3 if key is None else jax.random.split(key, 3)
        h_NxD = self.self_norm(x_NxD)
        x_NxD = x_NxD + _dropout(self.self_attn(h_NxD, h_NxD), self.dropout, k1)
        if self.cross_attn is not None:
            h_NxD = self.cross_attn(self.cross_norm(x_NxD), context_SxD, context_mask_S)
            # With every key masked the attention is a meaningless average:
            # zero it so a text-dropped example sees no cross-attention at all.
            has_text = jnp.any(context_mask_S, axis=-1)[..., None, None]
            h_NxD = h_NxD * has_text.astype(h_NxD.dtype)
            x_NxD = x_NxD + _dropout(h_NxD, self.dropout, k2)
        x_NxD = x_NxD + _dropout(self.mlp(self.mlp_norm(x_NxD)), self.dropout, k3)
        return x_NxD


class BlockStack(eqx.Module):
    """``depth`` identical blocks stacked along a leading axis, run with ``lax.scan``.

    On a mesh, ``layout.layer`` pins each layer's weights to their FSDP shards (so XLA
    gathers them layer by layer, not the whole stack) and its input to the batch split.
    """

    blocks: Block
    depth: int = eqx.field(static=True)
    remat: bool = eqx.field(static=True)
    layout: LayoutHints | None = eqx.field(static=True)  # None; a mesh's by constraints.with_layout

    def __init__(
        self, depth: int, width: int, mlp_dim: int, num_heads: int, *,
        cross: bool, dropout: float = 0.0, remat: bool = False, key, kernel: str = "xla",
    ):
        def make(k):
            return Block(width, mlp_dim, num_heads, cross=cross, dropout=dropout, key=k, kernel=kernel)

        self.blocks = eqx.filter_vmap(make)(jax.random.split(key, depth))
        self.depth = depth
        self.remat = remat
        self.layout = None

    def __call__(self, x_NxD, context_SxD=None, context_mask_S=None, *, key=None):
        params, static = eqx.partition(self.blocks, eqx.is_array)
        keys = None if key is None else jax.random.split(key, self.depth)

        def layer(x_NxD, params_and_key):
            block_params, block_key = params_and_key
            if self.layout is not None:
                block_params, x_NxD = self.layout.layer(block_params, x_NxD)
            block = eqx.combine(block_params, static)
            return block(x_NxD, context_SxD, context_mask_S, key=block_key), None

        if self.remat:
            layer = jax.checkpoint(layer)
        x_NxD, _ = jax.lax.scan(layer, x_NxD, (params, keys))
        return x_NxD
