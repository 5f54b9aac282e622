"""What hangs on the training loop (Levanter's ``TrainerHooks``, ``checkpointer.on_step``).

One protocol, called in list order: ``on_start(step)``; per update ``s``
``on_step(s, state, metrics)`` right after dispatch (device scalars, nothing synced),
``on_checked(s, metrics)`` once the loop reads ``s`` back, ``on_checkpoint(step, state)``
when a checkpoint is due (every earlier update checked); ``close()`` always, last.
The trainer's list is `FiniteGuard` (first: a NaN stops the others seeing it),
`MetricsWriter`, `ProgressBar`, the caller's hooks, `Checkpointer` (last: what
they logged is durable before the checkpoint is).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.runs.checkpoint import (
    atomic_write_bytes, checkpoint_path, list_checkpoints, prune_checkpoints, save_checkpoint,
)

__all__ = [
    "NonFiniteLossError", "TrainerHooks", "HookList", "MetricsWriter", "ProgressBar", "FiniteGuard", "Checkpointer",
]


class NonFiniteLossError(FloatingPointError):
    """A guarded metric (default: ``loss``) became NaN/inf; training was stopped."""

    def __init__(self, message: str, *, step: int, values: dict[str, float]):
        super().__init__(message)
        self.step = step
        self.values = values


def scalar(name: str, v: Any) -> float | int | bool:
    a = np.asarray(v)
    if a.size != 1:
        raise ValueError(f"metric {name!r} must be a scalar, got shape {a.shape}")
    return a.item()


class TrainerHooks:
    """Base class: every hook method does nothing unless overridden."""

    def on_start(self, step: int) -> None: ...
    def on_step(self, step: int, state: Any, metrics: dict) -> None: ...
    def on_checked(self, step: int, metrics: dict) -> None: ...
    def on_checkpoint(self, step: int, state: Any) -> None: ...
    def close(self) -> None: ...


class HookList(TrainerHooks):
    """Several hooks called in order; `close` reaches every hook even if one raises."""

    def __init__(self, hooks: Iterable[TrainerHooks]):
        self.hooks = list(hooks)

    def on_start(self, step):
        for h in self.hooks:
            h.on_start(step)

    def on_step(self, step, state, metrics):
        for h in self.hooks:
            h.on_step(step, state, metrics)

    def on_checked(self, step, metrics):
        for h in self.hooks:
            h.on_checked(step, metrics)

    def on_checkpoint(self, step, state):
        for h in self.hooks:
            h.on_checkpoint(step, state)

    def close(self):
        errors = []
        for h in self.hooks:
            try:
                h.close()
            except Exception as e:  # noqa: BLE001 - re-raised below, after every hook closed
                errors.append(e)
        if errors:
            raise errors[0]


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep only complete lines with ``step < step`` (the rest is recomputed)."""
    if not path.exists():
        return
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            ok = json.loads(line)["step"] < step
        except (ValueError, KeyError, TypeError):  # e.g. a line cut by a kill
            ok = False
        if ok:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_bytes(path, "".join(s + "\n" for s in kept).encode())


class MetricsWriter(TrainerHooks):
    """Appends checked metrics of every ``log_every``-th update (and the last) to ``path``."""

    def __init__(self, path: Path, *, log_every: int, steps: int):
        self.path, self.log_every, self.steps = Path(path), log_every, steps
        self.file = None

    def on_start(self, step):
        _truncate_metrics(self.path, step)
        self.file = open(self.path, "a")

    def on_checked(self, step, metrics):
        if step % self.log_every == 0 or step == self.steps - 1:
            row = {k: scalar(k, v) for k, v in metrics.items()}
            self.file.write(json.dumps({"step": step, "time": time.time(), **row}) + "\n")
            self.file.flush()

    def on_checkpoint(self, step, state):
        # Metrics up to a checkpoint must be on disk before the checkpoint is.
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self):
        if self.file is not None:
            self.file.close()


class ProgressBar(TrainerHooks):
    """A ``tqdm.auto`` bar over the run's updates, showing the last checked loss."""

    def __init__(self, *, steps: int, desc: str, enabled: bool = True, postfix_every: int = 1):
        self.steps, self.desc, self.enabled, self.bar = steps, desc, enabled, None
        self.postfix_every = postfix_every  # reading the loss is a device->host copy

    def on_start(self, step):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.steps, initial=step, disable=not self.enabled, desc=self.desc)

    def on_checked(self, step, metrics):
        if "loss" in metrics and (step % self.postfix_every == 0 or step == self.steps - 1):
            self.bar.set_postfix(loss=f"{scalar('loss', metrics['loss']):.4g}", refresh=False)
        self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class FiniteGuard(TrainerHooks):
    """Stops training at the first update whose ``names`` metrics are not finite.

    The loop reads update ``s`` back after dispatching ``s + 1``, so the check costs
    one device->host read per update without idling the device. ``describe(step)``
    gives the context a `NonFiniteLossError` message ends with.
    """

    def __init__(self, names: Sequence[str], describe: Callable[[int], str]):
        self.names, self.describe = tuple(names), describe

    def on_checked(self, step, metrics):
        missing = [k for k in self.names if k not in metrics]
        if missing:
            raise KeyError(f"step_fn metrics {sorted(metrics)} lack {missing}, which the finiteness guard reads")
        values = {k: scalar(k, metrics[k]) for k in self.names}
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not np.isfinite(v))
        if bad:
            raise NonFiniteLossError(f"non-finite {bad} at step {step} {self.describe(step)}",
                                     step=step, values=values)


@eqx.filter_jit
def _finite_leaves(tree):
    return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), eqx.filter(tree, eqx.is_inexact_array))


def first_nonfinite_leaf(tree) -> str | None:
    """The path of the first array leaf holding a NaN/inf, or None."""
    flags, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(_finite_leaves(tree)))
    for path, ok in flags:
        if not ok:
            return jax.tree_util.keystr(path)
    return None


class Checkpointer(TrainerHooks):
    """Writes a checkpoint every ``every`` updates and at ``steps``; keeps the newest ``keep``
    and every ``keep_every``-th.

    Files are ``ckpt_XXXXXXXX.eqx``, or Orbax steps through ``store`` (a
    `muse_mini.runs.sharded.ShardedCheckpoints`) on a mesh. A state with a
    NaN/inf leaf is never written: an inf gradient can poison the weights one
    step before the loss shows it. ``last`` is the newest good checkpoint.
    """

    def __init__(self, directory: Path, *, every: int, steps: int, keep: int, metadata: dict,
                 last: Path | None = None, keep_every: int = 0, store=None, wall_time_s: float = 0.0):
        self.directory, self.every, self.steps, self.keep = Path(directory), every, steps, keep
        self.keep_every, self.store = keep_every, store
        self.metadata, self.last, self.wall_time_s = metadata, last, wall_time_s

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.steps

    def on_start(self, step):
        self._t0, self._wall_before = time.time(), self.wall_time_s  # the resumed run's earlier time

    def on_checkpoint(self, step, state):
        if step == self.steps and self.has_final():  # resumed at its last step: already written
            return
        self.save(step, state, wall_time_s=self._wall_before + time.time() - self._t0)

    def has_final(self) -> bool:
        steps = self.store.steps() if self.store is not None else [s for s, _ in list_checkpoints(self.directory)]
        return bool(steps) and steps[-1] == self.steps

    def save(self, step: int, state: Any, *, wall_time_s: float) -> Path:
        bad = first_nonfinite_leaf(state)
        if bad is not None:
            raise NonFiniteLossError(
                f"state after update {step - 1} has non-finite values in leaf {bad} "
                f"({self.directory.parent}); not saving it. Last good checkpoint: {self.last}",
                step=step - 1, values={},
            )
        meta = {"step": step, "wall_time_s": wall_time_s, **self.metadata}
        self.wall_time_s = wall_time_s
        if self.store is not None:  # Orbax prunes by its own keep / keep_every options
            self.last = self.store.save(step, state, meta)
            return self.last
        self.last = save_checkpoint(checkpoint_path(self.directory, step), state, metadata=meta)
        prune_checkpoints(self.directory, self.keep, keep_every=self.keep_every)
        return self.last

    def wait(self) -> None:
        """Return once every checkpoint written so far is durable (Orbax saves in the background)."""
        if self.store is not None:
            self.store.wait()
