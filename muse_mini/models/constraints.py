"""A hook for laying out each scanned layer on a device mesh, set while a step is traced.

The models know nothing of meshes; a trainer on one (:mod:`muse_mini.training.placement`)
sets this hook while it traces the update, and :class:`muse_mini.models.layers.BlockStack`
calls it on every layer's weights and input inside its ``lax.scan``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable

__all__ = ["layer_constraint", "current_layer_constraint"]

# How each layer's weights and input are laid out inside the layer scan (None:
# as XLA likes). A trainer on a device mesh sets it (muse_mini.training.placement):
# pinning one layer's weights to their FSDP shards makes XLA gather them layer by
# layer, and pinning the activations to the batch split keeps XLA from
# replicating every example's activations on every device.
_LAYER_CONSTRAINT: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("layer_constraint",
                                                                                    default=None)


@contextlib.contextmanager
def layer_constraint(fn: Callable | None):
    """While tracing in this context, ``fn(block_params, x) -> (block_params, x)`` constrains
    each scanned layer's weights and input."""
    token = _LAYER_CONSTRAINT.set(fn)
    try:
        yield
    finally:
        _LAYER_CONSTRAINT.reset(token)


def current_layer_constraint() -> Callable | None:
    """The hook set by the innermost `layer_constraint` (None outside one)."""
    return _LAYER_CONSTRAINT.get()
