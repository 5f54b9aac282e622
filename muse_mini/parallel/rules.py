"""Logical axis names → mesh axes, and a training state placed by them (MaxText/nanodo).

`RULES` says which mesh axes each logical name (:class:`muse_mini.models.layers.Named`)
is split over; a dimension they do not divide stays whole, and a mesh axis is used once
per weight. Other arrays (VQGAN convolutions, counters, Adafactor's factored statistics)
are replicated. Optax's moments mirror the model's named modules, so they split like the
weights. :func:`init_sharded` builds a state inside ``jit`` straight into its shardings,
so no full copy of a 3B model exists on one device. :class:`MeshLayout` gives the layers
their hints on a mesh (:mod:`muse_mini.models.constraints`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from muse_mini.models.layers import Named, is_array_like
from muse_mini.parallel.mesh import mesh_size

__all__ = [
    "RULES", "BATCH_AXES", "spec_for", "state_shardings", "frozen_shardings", "batch_sharding", "replicated",
    "check_batch_size", "init_sharded", "place", "abstract_like", "MeshLayout",
]

# logical axis -> mesh axes it is split over (None: never split).
RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),   # activations and data: every batch-parallel axis
    "embed": "fsdp",             # FSDP: each weight's model-width axis (Levanter's choice)
    "embed_out": "tensor",       # the second width axis of a width×width matrix
    "mlp": "tensor",             # Megatron: MLP hidden units ...
    "heads": "tensor",           # ... and attention heads
    "vocab": "tensor",           # codebook logits
    "text_embed": "tensor",      # the text encoder's width, projected to ``embed``
    "patch": "tensor",           # super-res low-res pixel patches
    "children": "tensor",        # super-res skip: one vector per high-res child token
    "kv": None, "seq": None, "layers": None,
}
BATCH_AXES = RULES["batch"]
_FACTORED = {"v_row", "v_col"}  # Adafactor's per-row / per-column statistics


def spec_for(names: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh, rules=RULES) -> PartitionSpec:
    """The partition spec of one array whose dimensions have logical ``names``."""
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape, strict=True):
        axes = rules.get(name)
        axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        axes = tuple(a for a in axes if mesh.shape[a] > 1 and a not in used)
        if not axes or size % mesh_size(mesh, axes):
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _named_shardings(node: Named, mesh: Mesh, rules, factored: bool) -> Named:
    axes = node.param_axes()
    fields = [f for f in axes if is_array_like(getattr(node, f))]

    def sharding(field):
        leaf = getattr(node, field)
        names = ("layers",) * (leaf.ndim - len(axes[field])) + tuple(axes[field])
        if factored or len(names) != leaf.ndim:
            return replicated(mesh)
        return NamedSharding(mesh, spec_for(names, leaf.shape, mesh, rules))

    shardings = [sharding(f) for f in fields]
    return eqx.tree_at(lambda m: [getattr(m, f) for f in fields], node, shardings)


def state_shardings(tree: Any, mesh: Mesh, rules=RULES) -> Any:
    """A `NamedSharding` for every array leaf of ``tree`` (real or abstract); None elsewhere."""

    def shard(path, node):
        if isinstance(node, Named):
            factored = any(getattr(k, "name", None) in _FACTORED for k in path)
            node = _named_shardings(node, mesh, rules, factored)
            return jax.tree.map(lambda x: x if isinstance(x, NamedSharding) else
                                (replicated(mesh) if is_array_like(x) else None), node)
        return replicated(mesh) if is_array_like(node) else None

    arrays = eqx.filter(tree, is_array_like)
    return jax.tree_util.tree_map_with_path(shard, arrays, is_leaf=lambda x: isinstance(x, Named))


# The T5 encoder's weights (``eqx.nn.Linear`` stores ``(out, in)``) by module name: their
# logical axes, so T5-XXL frozen inside a step is split over the mesh like the model.
_T5_AXES = {"q": ("heads", "embed"), "k": ("heads", "embed"), "v": ("heads", "embed"), "o": ("embed", "heads"),
            "wi_0": ("mlp", "embed"), "wi_1": ("mlp", "embed"), "wo": ("embed", "mlp"), "embed": ("vocab", "embed")}


def frozen_shardings(tree: Any, mesh: Mesh, rules=RULES) -> Any:
    """`state_shardings`, plus the T5 encoder's weights split by `_T5_AXES` (frozen modules in a step)."""
    base = state_shardings(tree, mesh, rules)

    def one(path, x, sharding):
        names = [getattr(k, "name", None) for k in path]
        if (len(names) >= 2 and names[-1] == "weight" and names[-2] in _T5_AXES
                and sharding.spec == PartitionSpec()):
            axes = _T5_AXES[names[-2]]
            return NamedSharding(mesh, spec_for(("layers",) * (x.ndim - len(axes)) + axes, x.shape, mesh, rules))
        return sharding

    return jax.tree_util.tree_map_with_path(one, eqx.filter(tree, is_array_like), base)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading (batch) axis over ``data × fsdp``; the other axes whole."""
    axes = tuple(a for a in BATCH_AXES if mesh.shape[a] > 1)
    return NamedSharding(mesh, PartitionSpec(axes or None, *([None] * (ndim - 1))))


@dataclasses.dataclass(frozen=True)
class MeshLayout:
    """The layout hints (:class:`muse_mini.models.constraints.LayoutHints`) for ``mesh``."""

    mesh: Mesh

    def layer(self, block_params: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        block_params = jax.lax.with_sharding_constraint(block_params, state_shardings(block_params, self.mesh))
        if x.ndim == 3:  # (batch, tokens, width); one example (sampling) is left alone
            x = jax.lax.with_sharding_constraint(x, batch_sharding(self.mesh, 3))
        return block_params, x

    def gathered(self, weight: jax.Array) -> jax.Array:
        return jax.lax.with_sharding_constraint(weight, replicated(self.mesh))


def check_batch_size(batch_size: int, mesh: Mesh, where: str) -> None:
    """The global batch must split evenly over the batch-parallel devices."""
    n = mesh_size(mesh, BATCH_AXES)
    if batch_size % n:
        raise ValueError(f"{where}: the batch of {batch_size} does not split over "
                         f"mesh.data × mesh.fsdp = {n} devices; use a multiple of {n}")


def abstract_like(tree: Any, shardings: Any) -> Any:
    """``tree``'s arrays as ``ShapeDtypeStruct`` carrying ``shardings`` (a restore target)."""
    arrays, static = eqx.partition(tree, is_array_like)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), arrays, shardings)
    return eqx.combine(abstract, static)


def init_sharded(make_state: Callable[[jax.Array], Any], key: jax.Array, mesh: Mesh, abstract: Any = None) -> Any:
    """``make_state(key)`` computed under ``jit`` straight into its shardings (nanodo's init);
    ``abstract`` is its ``eqx.filter_eval_shape``, when the caller has it."""
    abstract = eqx.filter_eval_shape(make_state, key) if abstract is None else abstract
    shardings = state_shardings(abstract, mesh)
    static = eqx.filter(abstract, lambda x: not is_array_like(x))
    arrays = jax.jit(lambda k: eqx.filter(make_state(k), is_array_like), out_shardings=shardings)(key)
    return eqx.combine(arrays, static)


def _put(x, sharding: NamedSharding):
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding, may_alias=False)
    host = np.asarray(x)  # every process holds the same value; each keeps its own shards
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place(tree: Any, shardings: Any) -> Any:
    """Copy ``tree``'s arrays into ``shardings`` (fresh buffers a donating step may consume)."""
    arrays, static = eqx.partition(tree, is_array_like)
    return eqx.combine(jax.tree.map(_put, arrays, shardings), static)
