"""Layout hints a trainer on a device mesh gives the models while it traces a step.

The models know nothing of meshes. A trainer on one
(:mod:`muse_mini.training.placement`) traces its update inside
:func:`mesh_hints`, and two places in the models ask for a hint:

* :class:`muse_mini.models.layers.BlockStack` passes every scanned layer's
  weights and input through ``hints.layer(block_params, x)``: pinning the
  weights to their FSDP shards makes XLA gather them layer by layer (rather
  than the whole stack before the scan), and pinning the activations to the
  batch split keeps XLA from replicating every example's activations on every
  device (paper-3b on fsdp=256: 29.6 → 0.96 GiB per device).
* :class:`muse_mini.models.layers.Embedding` passes its table through
  ``hints.gathered(weight)`` before the lookup: a table split along its width
  would give rows split along the width, which XLA can only turn into a batch
  split by replicating them; a whole table (small next to the model) avoids it.

Outside :func:`mesh_hints` (one device, sampling) nothing is constrained.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Protocol

__all__ = ["MeshHints", "mesh_hints", "current_hints"]


class MeshHints(Protocol):
    def layer(self, block_params: Any, x: Any) -> tuple[Any, Any]: ...
    def gathered(self, weight: Any) -> Any: ...


_HINTS: contextvars.ContextVar[MeshHints | None] = contextvars.ContextVar("mesh_hints", default=None)


@contextlib.contextmanager
def mesh_hints(hints: MeshHints | None):
    """Trace model calls in this context with ``hints`` (None: no hints)."""
    token = _HINTS.set(hints)
    try:
        yield
    finally:
        _HINTS.reset(token)


def current_hints() -> MeshHints | None:
    """The hints of the innermost `mesh_hints` (None outside one)."""
    return _HINTS.get()
