"""Layout hints: the one way a device mesh reaches the models.

:class:`~muse_mini.models.layers.BlockStack` and :class:`~muse_mini.models.layers.Embedding`
have a static ``layout`` field, None by default (one device, sampling: nothing is
constrained). A trainer on a mesh sets it with :func:`with_layout` on the state it
traces a step with, and strips it (``layout=None``) before the state leaves the step,
so saved models and the jit cache never hold it.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Protocol

import equinox as eqx
import jax

__all__ = ["LayoutHints", "with_layout"]


class LayoutHints(Protocol):
    def layer(self, block_params: Any, x: Any) -> tuple[Any, Any]:
        """One scanned layer's weights and input, pinned to their shards (``BlockStack``)."""

    def gathered(self, weight: Any) -> Any:
        """An embedding table, whole before its lookup (``Embedding``)."""


def _has_layout(node) -> bool:
    return isinstance(node, eqx.Module) and any(f.name == "layout" for f in dataclasses.fields(node))


def _set(node, layout):
    if not _has_layout(node) or node.layout is layout:
        return node
    node = copy.copy(node)
    object.__setattr__(node, "layout", layout)  # a static field: eqx.tree_at reaches leaves only
    return node


def with_layout(tree: Any, layout: LayoutHints | None) -> Any:
    """``tree`` (a model, or a training state with its optimiser's copies) with every
    ``layout`` field set to ``layout``; None strips them."""
    return jax.tree.map(lambda node: _set(node, layout), tree, is_leaf=_has_layout)
