"""Where a training state and its batches live: one device, or a mesh across processes.

On a mesh the state is created into its shardings, each process assembles its rows of
the batch, the step is traced with the layers' layout hints (:meth:`Placement.with_layout`),
and its outputs are pinned to the state's shardings, so every step is one program.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh

from muse_mini.models.constraints import with_layout
from muse_mini.models.layers import is_array_like
from muse_mini.parallel.hosts import global_batch, local_rows
from muse_mini.parallel.mesh import make_mesh
from muse_mini.parallel.rules import (
    MeshLayout, abstract_like, batch_sharding, init_sharded, place, state_shardings,
)

__all__ = ["Placement"]


class Placement:
    """The mesh, the shardings of a state shaped ``like`` (real or abstract), and placing on it."""

    def __init__(self, like: Any, mesh: Mesh | None = None):
        self.mesh = make_mesh() if mesh is None else mesh
        self.sharded = self.mesh.devices.size > 1 or jax.process_count() > 1
        self.shardings = state_shardings(like, self.mesh)
        self.like = like
        self.layout = MeshLayout(self.mesh)

    def fresh(self, state: Any = None, init=None, key=None) -> Any:
        """The initial state on the mesh: ``init(key)`` built sharded, or ``state`` copied there."""
        if init is not None:
            return init_sharded(init, key, self.mesh, abstract=self.like)
        if not self.sharded:  # fresh buffers on one device, as the donating step needs
            return jax.tree.map(lambda x: jax.device_put(x, may_alias=False) if isinstance(x, jax.Array) else x,
                                state)
        return place(state, self.shardings)

    def target(self) -> Any:
        """The state as ``ShapeDtypeStruct`` leaves with shardings: what a restore fills."""
        return abstract_like(self.like, self.shardings)

    def put(self, state: Any) -> Any:
        """A state read from an ``.eqx`` file, copied into the shardings on a mesh (as read on one device)."""
        return place(state, self.shardings) if self.sharded else state

    def batch(self, batch: Any, global_size: int | None) -> Any:
        """This process's rows of ``batch`` as global arrays."""
        if not self.sharded:
            return batch
        leaves = jax.tree.leaves(batch)
        n = int(np.shape(leaves[0])[0])
        total = n if global_size is None or jax.process_count() == 1 else global_size
        if n == total and jax.process_count() > 1:  # the whole global batch: keep our rows
            rows = local_rows(batch_sharding(self.mesh), total)
            batch = jax.tree.map(lambda x: np.asarray(x)[rows], batch)
        return global_batch(batch, lambda ndim: batch_sharding(self.mesh, ndim), total)

    def with_layout(self, state: Any) -> Any:
        """``state`` to trace a step with: on a mesh, its layers carry the mesh's layout hints."""
        return with_layout(state, self.layout) if self.sharded else state

    def constrain(self, state: Any) -> Any:
        """Inside the jitted update: the new state without layout hints, its arrays pinned to
        the state's shardings (so the next step sees the layout this one produced)."""
        if not self.sharded:
            return state
        arrays, static = eqx.partition(with_layout(state, None), is_array_like)
        return eqx.combine(jax.lax.with_sharding_constraint(arrays, self.shardings), static)

    def gather(self, tree: Any) -> Any:
        """``tree``'s arrays whole, as NumPy on every host (to write ``model.eqx``); a collective:
        every process must call it."""
        if not self.sharded:
            return tree
        arrays, static = eqx.partition(tree, is_array_like)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            arrays = multihost_utils.process_allgather(arrays, tiled=True)
        else:
            arrays = jax.device_get(arrays)
        return eqx.combine(jax.tree.map(np.asarray, arrays), static)
