"""Sharded training checkpoints with ``orbax-checkpoint``, for runs on several devices or processes.

Each process writes only its devices' shards, in the background, and a step appears only
once complete. Restoring reads each array into the target's sharding, so a run saved on
``fsdp=8`` resumes on ``fsdp=4`` or one device. Arrays are stored by pytree path; the
directory must be one every process sees.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax

from muse_mini.models.layers import is_array_like
from muse_mini.runs.layout import SHARDED_DIR  # noqa: F401  (re-exported: where the steps live)

__all__ = ["SHARDED_DIR", "ShardedCheckpoints", "sharded_steps"]



def _named(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``tree``'s arrays by their path (``prefix`` + ``.model.decoder...``), in leaf order."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(eqx.filter(tree, is_array_like))
    return {prefix + jax.tree_util.keystr(path): x for path, x in leaves}


def _unflatten(like: Any, arrays: dict[str, Any], prefix: str = "") -> Any:
    """``like`` with its arrays replaced by ``arrays`` (named as `_named` names them)."""
    skeleton, static = eqx.partition(like, is_array_like)
    tree = jax.tree_util.tree_unflatten(jax.tree.structure(skeleton), [arrays[k] for k in _named(skeleton, prefix)])
    return eqx.combine(tree, static)


def _unkey(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def sharded_steps(directory: str | os.PathLike) -> list[int]:
    """Finished Orbax steps under ``directory`` (temporaries of a killed save are not listed)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


class ShardedCheckpoints:
    """``directory/<step>/`` Orbax checkpoints; keeps the newest ``keep`` and every ``keep_every``-th."""

    def __init__(self, directory: str | os.PathLike, *, keep: int, keep_every: int = 0):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.directory = Path(directory).absolute()
        options = dict(max_to_keep=keep or None, keep_period=keep_every or None, create=True,
                       enable_async_checkpointing=True, step_format_fixed_length=8)
        try:  # a save killed mid-way leaves a temporary directory: remove it on the next start
            options = ocp.CheckpointManagerOptions(**options, cleanup_tmp_directories=True)
        except TypeError:  # older orbax
            options = ocp.CheckpointManagerOptions(**options)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, metadata: dict) -> Path:
        arrays = {k: _unkey(v) for k, v in _named(state).items()}
        args = self.ocp.args.Composite(state=self.ocp.args.StandardSave(arrays),
                                       meta=self.ocp.args.JsonSave(metadata))
        self.manager.save(step, args=args, force=True)
        return self.directory / f"{step:08d}"

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """``target``: the state's skeleton with ``ShapeDtypeStruct(..., sharding=...)`` leaves."""
        named = _named(target)
        keys = {k for k, v in named.items() if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key)}
        wanted = {k: (jax.ShapeDtypeStruct(v.shape + (2,), jax.numpy.uint32, sharding=v.sharding)
                      if k in keys else v) for k, v in named.items()}
        args = self.ocp.args.Composite(state=self.ocp.args.StandardRestore(wanted),
                                       meta=self.ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
        arrays = {k: jax.random.wrap_key_data(v) if k in keys else v for k, v in restored.state.items()}
        return _unflatten(target, arrays), dict(restored.meta)

    def restore_part(self, step: int, prefix: str, like: Any) -> Any:
        """Only the arrays under ``prefix`` (e.g. ``".model"``), whole, on one device (the offline EMA's read)."""
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        named = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=device) for k, v in _named(like, prefix).items()}
        restore_args = self.ocp.checkpoint_utils.construct_restore_args(named)
        args = self.ocp.args.Composite(state=self.ocp.args.PyTreeRestore(named, restore_args=restore_args,
                                                                         partial_restore=True))
        return _unflatten(like, self.manager.restore(step, args=args).state, prefix)

    def wait(self) -> None:
        """Block until every background save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
