"""Pieces shared by the aMUSEd ports: torch-layout layers, norms, and the weight-name mapping.

Weights keep PyTorch's layouts (``Linear`` ``(out, in)``, ``Conv2d`` ``(out, in, kh, kw)``) and
the modules' field names are the checkpoints' names, so loading is a name-for-name copy:
:func:`torch_names` reads the names off the module tree and :func:`load_named` fills it,
refusing unknown or missing names and wrong shapes in one line each. Constructors only lay out
shapes; :func:`init_weights` draws a random model in one go (one random draw per weight
compiles apart, which takes minutes on a CPU).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from safetensors.numpy import load_file

from muse_mini.models.layers import normals


class Dense(eqx.Module):
    """torch's ``nn.Linear``: ``x @ weight.T + bias``, weight ``(out, in)``, bias optional."""

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"] | None

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True):
        self.weight = jnp.zeros((out_dim, in_dim))  # drawn by init_weights
        self.bias = jnp.zeros((out_dim,)) if bias else None

    def __call__(self, x_xI):
        y = x_xI @ self.weight.T.astype(x_xI.dtype)
        return y if self.bias is None else y + self.bias.astype(x_xI.dtype)


class Norm(eqx.Module):
    """diffusers' ``RMSNorm`` (``kind="rms"``) or torch's ``LayerNorm`` (``"layer"``) over the last
    axis, statistics in float32; ``weight``/``bias`` only when the checkpoint has them."""

    weight: Float[Array, " dim"] | None
    bias: Float[Array, " dim"] | None
    eps: float = eqx.field(static=True)
    kind: str = eqx.field(static=True)

    def __init__(self, dim: int, eps: float, affine: bool = True, bias: bool = False, kind: str = "rms"):
        if kind not in ("rms", "layer"):
            raise ValueError(f"kind: expected 'rms' or 'layer', got {kind!r}")
        self.weight = jnp.ones((dim,)) if affine else None
        self.bias = jnp.zeros((dim,)) if affine and bias else None
        self.eps, self.kind = eps, kind

    def __call__(self, x_xD):
        x32 = x_xD.astype(jnp.float32)
        if self.kind == "layer":
            x32 = x32 - x32.mean(-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.astype(jnp.float32)
        if self.bias is not None:
            y = y + self.bias.astype(jnp.float32)
        return y.astype(x_xD.dtype)


class Conv(eqx.Module):
    """torch's ``Conv2d`` (weight ``(out, in/groups, kh, kw)``) or, with ``transposed``, a kernel-2 stride-2
    ``ConvTranspose2d`` (weight ``(in, out, 2, 2)``: each cell becomes a 2×2 patch); channels last."""

    weight: Float[Array, "a b kh kw"]
    bias: Float[Array, " out"] | None
    transposed: bool = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], bias: bool, transposed: bool = False):
        self.weight = jnp.zeros(shape)
        self.bias = jnp.zeros((shape[transposed],)) if bias else None
        self.transposed = transposed

    def __call__(self, x_HxWxI, stride: int = 1, padding=((0, 0), (0, 0)), groups: int = 1):
        w = self.weight.astype(x_HxWxI.dtype)
        if self.transposed:
            H, W, _ = x_HxWxI.shape
            y = jnp.einsum("hwi,ioab->hawbo", x_HxWxI, w).reshape(2 * H, 2 * W, -1)
        else:
            y = jax.lax.conv_general_dilated(x_HxWxI[None], w, (stride, stride), padding, feature_group_count=groups,
                                             dimension_numbers=("NHWC", "OIHW", "NHWC"))[0]
        return y if self.bias is None else y + self.bias.astype(y.dtype)


# --------------------------------------------------------------------------
# Checkpoint names <-> module leaves


def _path_name(path) -> str:
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(getattr(k, "key", k)))
    return ".".join(parts)


def torch_names(module, *, stacked: tuple[str, ...] = (), rename: Mapping[str, str] | None = None):
    """Each array leaf of ``module`` as ``{checkpoint name: (leaf index, layer or None)}``.

    A leaf's name is its attribute path (``down_block.res_blocks.0.norm.weight``); a leaf under
    a ``stacked`` prefix carries a leading layer axis and gets one name per layer
    (``transformer_layers.3.attn1.to_q.weight``); ``rename`` swaps dotted path pieces
    (``{"ff.proj": "ff.net.0.proj"}``) where a checkpoint name is not a Python identifier.
    """
    names = {}
    leaves = jax.tree_util.tree_flatten_with_path(module)[0]
    for index, (path, leaf) in enumerate(leaves):
        name = _path_name(path)
        for old, new in (rename or {}).items():
            name = f".{name}.".replace(f".{old}.", f".{new}.")[1:-1]
        prefix = next((p for p in stacked if name.startswith(p + ".")), None)
        if prefix is None:
            names[name] = (index, None)
            continue
        for layer in range(leaf.shape[0]):
            names[f"{prefix}.{layer}{name[len(prefix):]}"] = (index, layer)
    return names


def _listed(names) -> str:
    names = sorted(names)
    return str(names[:8])[:-1] + (f", ... {len(names) - 8} more]" if len(names) > 8 else "]")


def check_names(what: str, expected, found, where=None) -> None:
    """One-line ``ValueError`` naming the unknown and the missing checkpoint names (and the file, ``where``), if any."""
    unknown, missing = set(found) - set(expected), set(expected) - set(found)
    if unknown or missing:
        raise ValueError(f"{what}: unknown weights {_listed(unknown)}, missing weights {_listed(missing)}"
                         + (f" in {where}" if where is not None else ""))


def init_weights(skeleton, key, *, stacked: tuple[str, ...] = (), std: float = 0.02):
    """``skeleton`` (e.g. from ``eqx.filter_eval_shape``) materialised as torch initialises it, roughly:
    matrices and kernels (``*weight`` of 2+ axes) ~ N(0, std²) from ONE draw, norm scales 1, the rest 0."""
    leaves, treedef = jax.tree_util.tree_flatten(skeleton)
    kinds = {}
    for name, (index, layer) in torch_names(skeleton, stacked=stacked).items():
        ndim = len(leaves[index].shape) - (layer is not None)
        kinds[index] = ("normal" if ndim > 1 else "ones") if name.endswith("weight") else "zeros"
    drawn = iter(normals(key, *[leaves[i].shape for i in sorted(kinds) if kinds[i] == "normal"], std=std))
    new = [next(drawn) if kinds[i] == "normal" else getattr(jnp, kinds[i])(leaves[i].shape) for i in sorted(kinds)]
    return jax.tree_util.tree_unflatten(treedef, new)


def load_named(module, tensors: Mapping[str, np.ndarray], what: str, *, dtype=jnp.float32,
               stacked: tuple[str, ...] = (), rename: Mapping[str, str] | None = None):
    """``module`` (real or from ``eqx.filter_eval_shape``) with every leaf read from ``tensors``
    by :func:`torch_names`, cast to ``dtype``; wrong names or shapes give a one-line ValueError."""
    names = torch_names(module, stacked=stacked, rename=rename)
    check_names(what, names, tensors)
    leaves, treedef = jax.tree_util.tree_flatten(module)
    bad = [f"{name} {tensors[name].shape} (expected {tuple(leaves[i].shape[layer is not None:])})"
           for name, (i, layer) in names.items() if tensors[name].shape != tuple(leaves[i].shape[layer is not None:])]
    if bad:
        raise ValueError(f"{what}: wrong shapes {'; '.join(sorted(bad))}")
    by_leaf = {}
    for name, (index, layer) in sorted(names.items(), key=lambda item: item[1][1] or 0):
        by_leaf.setdefault(index, []).append((layer, name))
    new = list(leaves)
    for index, parts in by_leaf.items():
        arrays = [np.asarray(tensors[name]) for _, name in parts]
        new[index] = jnp.asarray(arrays[0] if parts[0][0] is None else np.stack(arrays), dtype)
    return jax.tree_util.tree_unflatten(treedef, new)


def read_diffusers_folder(folder, what: str, weights: str = "diffusion_pytorch_model"):
    """``(config dict, {name: numpy array})`` from a diffusers component folder: ``config.json``
    with ``<weights>.safetensors`` (or the ``.fp16.safetensors`` variant)."""
    folder = Path(folder)
    config = folder / "config.json"
    files = [folder / f"{weights}.safetensors", folder / f"{weights}.fp16.safetensors"]
    found = next((f for f in files if f.is_file()), None)
    if not config.is_file() or found is None:
        raise ValueError(f"{what}: {folder} is not a diffusers folder; expected config.json and "
                         f"{files[0].name} (or {files[1].name}) in it")
    return json.loads(config.read_text()), load_file(found)
