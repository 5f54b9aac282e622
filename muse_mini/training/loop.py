"""The shared trainer: a short, resumable, bit-exact loop with hooks (Levanter's shape).

Every stage (VQGAN tokenizer, base transformer, super-res transformer) supplies

* ``state``    - a pytree (usually an ``eqx.Module``) holding model(s) and optimiser state(s),
* ``step_fn``  - ``(state, batch, key) -> (state, metrics)``, a pure update,
* ``batch_fn`` - ``step -> batch``, a *pure function of the step index*,

and `train` does the rest: jit once, checkpoint, resume, log, guard against NaNs.
The pieces live apart: optimisers in :mod:`.optim`, keys and batch order in
:mod:`.keys`, the run directory in :mod:`.rundir`, checkpointing, metrics, the
NaN guard and the progress bar in :mod:`.hooks`.

Determinism contract. Update number ``s`` (0-based) consumes ``batch_fn(s)`` and the
key ``step_key(seed, s) = jax.random.fold_in(base_key(seed), s)``. Data order and
randomness are therefore functions of ``(seed, s)`` alone, and a checkpoint needs to
store only the state and the step counter: a run killed at any moment and resumed
produces bit-identical parameters to one that never stopped (tested under SIGKILL).
That needs deterministic kernels: on GPU set
``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` (scatter-adds, e.g. embedding
gradients, otherwise use atomics); without it resuming is still correct, just not
bit-identical. Changing jax/XLA versions or hardware between runs has the same effect.

Step numbering. A checkpoint's ``step`` is the number of updates already applied,
i.e. the index of the next update to run (``ckpt_00000100.eqx`` = updates 0..99
done). Metric lines carry the index ``s`` of the update that produced them (the loss
is that of the state *before* update ``s``, so ``step 0`` is the initial loss).

Failure behaviour of `train`:

* the newest checkpoint is unreadable -> `CheckpointError` naming it; we do *not*
  silently fall back to an older one (that would hide disk problems and silently
  redo work) - delete the named file to resume from the previous one.
* ``config.json`` differs (other than `RESUMABLE_FIELDS`) -> `ConfigMismatchError`.
* a guarded metric is NaN/inf at update ``s`` -> `NonFiniteLossError` naming ``s``;
  nothing is saved after the last good checkpoint. Checkpoints are only written
  after every update up to them has been checked (lagged by one update, see
  `FiniteGuard`), and after checking that the state itself is finite (an inf
  gradient can poison the weights one step before the loss shows it).

Sharding. A `Placement` (:mod:`.placement`) is the one place a device mesh
enters: it builds or copies the state into its shardings, assembles each
process's rows of the batch, pins the update's outputs, and picks the
checkpoint format (``.eqx`` files on one device, Orbax on a mesh). In a
multi-process job every process runs this loop; process 0 alone writes the
run's files, and every process writes its own checkpoint shards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jax.sharding import Mesh

from muse_mini.config import TrainConfig
from muse_mini.parallel.hosts import barrier, is_main_process
from muse_mini.runs.sharded import SHARDED_DIR, ShardedCheckpoints
from muse_mini.training.hooks import (
    CallbackHook, Checkpointer, FiniteGuard, HookList, MetricsWriter, NonFiniteLossError, ProgressBar,
    TrainerHooks,
)
from muse_mini.training.keys import base_key, epoch_batch_indices, init_key, step_key
from muse_mini.training.placement import Placement
from muse_mini.training.optim import (
    TrainState, init_train_state, make_optimizer, make_schedule, make_train_step, weight_decay_mask,
)
from muse_mini.training.rundir import (
    RESUMABLE_FIELDS, ConfigMismatchError, RunDirectory, RunLock, load_final, load_latest,
    validate_train_config,
)

# The loop's names, and the pieces' names callers have always imported from here.
__all__ = [
    "TrainConfig", "NonFiniteLossError", "ConfigMismatchError", "RESUMABLE_FIELDS", "RunLock", "TrainerHooks",
    "make_schedule", "make_optimizer", "weight_decay_mask",
    "base_key", "step_key", "init_key", "epoch_batch_indices",
    "TrainState", "init_train_state", "make_train_step",
    "place_state", "compile_step", "train", "load_final", "load_latest",
]

logger = logging.getLogger(__name__)


# The loop itself is short: each piece it calls lives in .rundir, .hooks or .placement.
# long: its signature and the argument reference make up most of its lines.
def train(
    run_dir: str | os.PathLike,
    *,
    state: Any = None,
    init: Callable[[jax.Array], Any] | None = None,
    step_fn: Callable[[Any, Any, jax.Array], tuple[Any, dict[str, Any]]],
    batch_fn: Callable[[int], Any],
    cfg: TrainConfig,
    metadata: dict,
    progress: bool = True,
    callbacks: Iterable[Callable[[int, Any, dict], None]] | None = None,
    check_finite: Sequence[str] = ("loss",),
    donate: bool = True,
    config_ignore: Sequence[str] = (),
    config_defaults: dict | None = None,
    model_of: Callable[[Any], Any] | None = None,
    hooks: Iterable[TrainerHooks] = (),
    mesh: Mesh | None = None,
) -> Any:
    """Train for ``cfg.steps`` updates in ``run_dir``, resuming if possible.

    Arguments:
        state: the fresh state (copied onto the mesh), or None with ``init``.
        init: ``key -> state``, built under ``jit`` straight into its shardings
            with ``key = init_key(cfg.seed)``; no full copy is made anywhere.
        step_fn: ``(state, batch, key) -> (state, metrics)``, pure; jitted once here.
            ``metrics`` maps names to scalars and must contain ``check_finite``.
        batch_fn: ``step -> batch`` (fixed shapes), pure in the step (`epoch_batch_indices`):
            the global batch, or only this process's rows (`muse_mini.parallel.hosts.local_rows`).
        cfg: a `TrainConfig`; ``seed`` defines every key (`step_key`).
        metadata: the stage's JSON-able configuration (``config.json``, checkpoint headers).
        callbacks: ``cb(step, state, metrics)`` called after update ``step`` was
            dispatched (``metrics`` are device scalars; ``float()`` syncs). Don't keep
            a reference to ``state``: its buffers are donated to the next update.
        check_finite: metric names that must stay finite (`NonFiniteLossError`).
        donate: donate the state's buffers to the update (halves peak memory).
        config_ignore: dotted prefixes of ``metadata`` fields this run does not
            depend on (e.g. ``"config.superres"`` for the base model): they may
            differ on resume, and the stored ``config.json`` takes the new values.
        config_defaults: ``metadata``-shaped defaults: a field missing from a stored
            ``config.json`` counts as its default, so adding a field that defaults to
            the old behaviour keeps finished runs valid.
        model_of: ``state -> model``; when given, the finished run also writes
            the model alone to ``model.eqx`` (what sampling loads).
        hooks: further `TrainerHooks`, called after the built-in ones.
        mesh: the device mesh (`muse_mini.parallel.mesh.make_mesh`); default one device.

    Returns the final state. A finished run (``DONE.json``) returns immediately with
    the stored final state; calling again with a larger ``cfg.steps`` continues it.

    Failures (bad checkpoint, config mismatch, NaN) are described in the module docstring.
    """
    validate_train_config(cfg)
    if (state is None) == (init is None):
        raise TypeError("train(): pass exactly one of state= and init=")
    main = is_main_process()
    rd = RunDirectory(run_dir, {"train_config": cfg, "metadata": metadata}, say=_sayer(progress and main),
                      ignore=[f"metadata.{p}" for p in config_ignore],
                      defaults={"metadata": config_defaults or {}})
    key = init_key(cfg.seed)
    where = Placement(state if init is None else eqx.filter_eval_shape(init, key), mesh)
    with RunLock(rd.path, enabled=main):
        rd.check_config()
        with _checkpoint_store(rd, cfg, where) as store:
            if rd.finished(cfg.steps):
                return rd.load_final(where, store)
            resumed = rd.resume_point(where, store, cfg.steps)
            start, wall_before, last = (0, 0.0, None) if resumed is None else resumed[1:]
            state = where.fresh(state, init, key) if resumed is None else resumed[0]
            if main:
                rd.write_config()  # records e.g. a new `steps` once it is accepted
            ckpt = Checkpointer(rd.ckpt_dir, every=cfg.checkpoint_every, steps=cfg.steps,
                                keep=cfg.keep_checkpoints, keep_every=cfg.keep_every,
                                metadata={"seed": cfg.seed, "config": rd.config}, last=last, store=store,
                                wall_time_s=wall_before)
            state = _train_steps(rd, cfg, state, start, ckpt, where, step_fn, batch_fn, progress,
                                 callbacks, check_finite, donate, hooks, main)
            _publish(rd, ckpt, None if model_of is None else where.gather(model_of(state)), cfg.steps, main)
            return state


def _checkpoint_store(rd: RunDirectory, cfg: TrainConfig, where: Placement):
    """Orbax checkpoints on a mesh (closed on the way out); none (``.eqx`` files) on one device."""
    if not where.sharded:
        return contextlib.nullcontext(None)
    store = ShardedCheckpoints(rd.ckpt_dir / SHARDED_DIR, keep=cfg.keep_checkpoints, keep_every=cfg.keep_every)
    return contextlib.closing(store)


def _publish(rd: RunDirectory, ckpt: Checkpointer, model, steps: int, main: bool) -> None:
    """Once the final checkpoint is durable, process 0 writes the result and ``DONE.json``."""
    ckpt.wait()
    if main:
        rd.publish(ckpt.last, model, steps=steps, wall_time_s=ckpt.wall_time_s)
    barrier(f"published {rd.path}")


def _train_steps(rd, cfg, state, start, ckpt, where, step_fn, batch_fn, progress,
                 callbacks, check_finite, donate, hooks, main):
    """Run updates ``start..cfg.steps`` with the built-in and the caller's hooks."""
    guard = FiniteGuard(check_finite, lambda s: _nonfinite_advice(s, cfg.seed, rd.path, ckpt.last))
    own = [MetricsWriter(rd.metrics_path, log_every=cfg.log_every, steps=cfg.steps),
           ProgressBar(steps=cfg.steps, desc=rd.path.name, enabled=progress, postfix_every=cfg.log_every)]
    all_hooks = HookList([*(own if main else []), *(CallbackHook(cb) for cb in callbacks or ()), *hooks])
    t0, wall_before = time.time(), ckpt.wall_time_s  # the resumed run's earlier training time
    wall = lambda: wall_before + time.time() - t0  # noqa: E731
    jstep = compile_step(step_fn, cfg.seed, tuple(check_finite), donate, where)
    place_batch = lambda s: where.batch(batch_fn(s), cfg.batch_size)  # noqa: E731
    try:
        all_hooks.on_start(start)
        state = _run(jstep, state, place_batch, range(start, cfg.steps), guard, ckpt, all_hooks, wall)
    finally:
        all_hooks.close()
    return state


def _nonfinite_advice(step: int, seed: int, run_dir: Path, last_ckpt: Path | None) -> str:
    return (f"(batch_fn({step}), step_key(seed={seed}, {step})) in {run_dir}. Training stopped; nothing "
            f"was saved after the last good checkpoint ({last_ckpt}). Resuming would hit the same "
            "values: lower the learning rate, set clip_norm, or fix the step function.")


def _run(jstep, state, batch_fn, steps: range, guard: FiniteGuard, ckpt: Checkpointer,
         hooks: TrainerHooks, wall: Callable[[], float]):
    """Dispatch updates ``steps``; check each one lagged; checkpoint when due and at the end."""

    def checked(item):
        if item is not None:
            hooks.on_checked(*item)

    def checkpoint(step):
        checked(guard.flush())  # every update up to the checkpoint is checked first
        hooks.on_checkpoint(step)
        ckpt.save(step, state, wall_time_s=wall())

    for s in steps:
        state, metrics, ok = jstep(batch_fn(s), state, np.asarray(s, np.uint32))
        checked(guard.push(s, metrics, ok))  # update s-1, while the device runs s
        hooks.on_step(s, state, metrics)
        if ckpt.due(s + 1):
            checkpoint(s + 1)
    checked(guard.flush())  # pragma: no cover in practice - the last step always checkpoints
    if not ckpt.has_final():
        checkpoint(ckpt.steps)  # e.g. steps == 0
    return state


def _sayer(progress: bool) -> Callable[[str], None]:
    """Log ``msg``, and print it above the progress bar when ``progress``."""

    def say(msg: str) -> None:
        logger.info(msg)
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(msg)

    return say


def place_state(state):
    """The initial state on one device, as fresh buffers the update may donate."""
    return Placement(state).fresh(state)


def compile_step(step_fn, seed: int, check_finite: tuple[str, ...], donate: bool,
                 where: Placement | None = None):
    """``jstep(batch, state, step) -> (state, metrics, ok)``: `make_update` under ``eqx.filter_jit``.

    Argument order (batch, state, step) lets "all-except-first" donate the
    state while never donating the batch, which may alias a dataset the stage keeps.
    """
    traces = [0]
    update = make_update(step_fn, seed, check_finite, where)

    @eqx.filter_jit(donate="all-except-first" if donate else "none")
    def jstep(batch, state, step):
        traces[0] += 1
        if traces[0] == 2:
            warnings.warn(
                "the training step was traced twice: batch or state shapes/dtypes (or "
                "static fields) changed between steps, so it recompiles",
                stacklevel=2,
            )
        return update(batch, state, step)

    return jstep


def make_update(step_fn, seed: int, check_finite: tuple[str, ...], where: Placement | None = None):
    """``update(batch, state, step) -> (state, metrics, ok)``, the function the trainer jits.

    ``ok`` says whether every ``check_finite`` metric is finite (read lagged by
    `FiniteGuard`). The inputs arrive in their shardings (``where``); the new
    state is pinned to the same ones, so every step compiles to one program.
    The planner (:mod:`muse_mini.planner`) compiles this same function.
    """
    key0 = base_key(seed)

    def update(batch, state, step):
        if where is None:
            state, metrics = step_fn(state, batch, jax.random.fold_in(key0, step))
        else:
            with where.tracing():
                state, metrics = step_fn(state, batch, jax.random.fold_in(key0, step))
            state = where.constrain(state)
        missing = [k for k in check_finite if k not in metrics]
        if missing:
            raise KeyError(
                f"step_fn metrics {sorted(metrics)} lack {missing}; return them or pass "
                "check_finite=... to train()"
            )
        ok = jnp.array(True)
        for k in check_finite:
            ok = ok & jnp.all(jnp.isfinite(metrics[k]))
        return state, metrics, ok

    return update
