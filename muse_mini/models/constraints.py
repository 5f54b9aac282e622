"""Layout hints, the one way a device mesh reaches the models: ``BlockStack`` and ``Embedding``
have a static ``layout`` field, None (nothing constrained) unless a trainer on a mesh sets it
with :func:`with_layout` for the step it traces, and strips it before the state leaves."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Protocol

import equinox as eqx
import jax

__all__ = ["LayoutHints", "with_layout"]


class LayoutHints(Protocol):
    def layer(self, block_params: Any, x: Any) -> tuple[Any, Any]: ...  # a scanned layer's weights and input

    def gathered(self, weight: Any) -> Any: ...  # an embedding table before its lookup


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
