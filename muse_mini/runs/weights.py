"""Model weights apart from training state (nanoGPT's ``{'model', 'optimizer'}`` split).

A finished stage writes ``model.eqx``, its model alone in the format of
:mod:`muse_mini.runs.checkpoint`; sampling reads only that file, so it builds
no optimiser and no discriminator.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.runs.checkpoint import load_checkpoint, save_checkpoint
from muse_mini.runs.layout import DONE_FILE, MODEL_FILE, stage_complete


def save_model(run_dir: str | os.PathLike, model: Any, *, metadata: dict) -> Path:
    """Write ``run_dir/model.eqx`` atomically."""
    return save_checkpoint(Path(run_dir) / MODEL_FILE, model, metadata=metadata)


def load_model(run_dir: str | os.PathLike, like: Any) -> Any:
    """The trained model of a finished run; ``like`` is its skeleton (``eqx.filter_eval_shape``)."""
    run_dir = Path(run_dir)
    if not stage_complete(run_dir):
        raise FileNotFoundError(f"{run_dir} holds no finished run (no {DONE_FILE}); train it first")
    if not (run_dir / MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"{run_dir}: no {MODEL_FILE} (a run from before muse_mini 0.1): retrain it, or delete its {DONE_FILE} "
            f"and rerun its training command, which resumes at its last step and writes {MODEL_FILE}")
    return load_checkpoint(run_dir / MODEL_FILE, like)[0]


# --------------------------------------------------------------------------- named tensors (safetensors)


def _leaf_name(path) -> str:
    parts = []
    for entry in path:
        for attr in ("name", "key", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
    return ".".join(parts)


def _is_weight(x) -> bool:
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)  # arrays, or a skeleton's stand-ins


def _named_leaves(model) -> list[tuple[str, Any]]:
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(model, _is_weight))[0]
    return [(_leaf_name(path), leaf) for path, leaf in leaves]


def model_tensors(model: Any) -> dict[str, np.ndarray]:
    """Every array of ``model`` by its attribute path (``blocks.attn.qkv.weight``), as a safetensors file holds them."""
    tensors = {}
    for name, leaf in _named_leaves(model):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            raise ValueError(f"model: {name} is a PRNG key; model weight files hold parameters only")
        tensors[name] = np.asarray(leaf)
    return tensors


def model_from_tensors(like: Any, tensors: dict[str, np.ndarray], where: str) -> Any:
    """``like`` (a skeleton) filled from ``tensors``; unknown, missing or misshapen names are refused in one line."""
    named = _named_leaves(like)
    expected = {name for name, _ in named}
    missing, unknown = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
    if missing or unknown:
        raise ValueError(f"{where}: weights do not fit the model: missing {missing[:5] or 'none'}"
                         f"{' …' if len(missing) > 5 else ''}, unknown {unknown[:5] or 'none'}"
                         f"{' …' if len(unknown) > 5 else ''}")
    values = []
    for name, leaf in named:
        value = tensors[name]
        if tuple(value.shape) != tuple(leaf.shape):
            raise ValueError(f"{where}: {name} has shape {tuple(value.shape)}, the model expects {tuple(leaf.shape)}")
        values.append(jnp.asarray(value, dtype=leaf.dtype))
    arrays, static = eqx.partition(like, _is_weight)
    return eqx.combine(jax.tree.unflatten(jax.tree.structure(arrays), values), static)
