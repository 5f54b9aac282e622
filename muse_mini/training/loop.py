"""The shared trainer: ``state = train(run, step_fn=..., batch_fn=..., init=...)`` (Levanter's shape).

Update ``s`` consumes ``batch_fn(s)`` and ``step_key(seed, s)``, so a checkpoint (state,
step) resumes bit-identically, even after SIGKILL (on GPU with
``XLA_FLAGS=--xla_gpu_deterministic_ops=true``). A checkpoint's step counts the updates
applied; a metrics line carries the update that produced it. Everything but dispatching
updates is a hook (:mod:`.hooks`); :mod:`.rundir` checks the config and finds where to
resume; a :class:`~.placement.Placement` is the one place a device mesh enters.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh

from muse_mini.parallel.hosts import barrier, is_main_process
from muse_mini.parallel.rules import frozen_shardings, place
from muse_mini.runs.sharded import SHARDED_DIR, ShardedCheckpoints
from muse_mini.training.hooks import Checkpointer, FiniteGuard, HookList, MetricsWriter, ProgressBar, TrainerHooks
from muse_mini.training.keys import base_key, init_key
from muse_mini.training.placement import Placement
from muse_mini.training.rundir import RunDirectory, RunLock, RunSpec

logger = logging.getLogger(__name__)


def train(run: RunSpec, *, step_fn: Callable, batch_fn: Callable[[int], Any] | None, state: Any = None,
          init: Callable[[jax.Array], Any] | None = None, hooks: Iterable[TrainerHooks] = (),
          mesh: Mesh | None = None, progress: bool = True) -> Any:
    """Train ``run.cfg.steps`` updates in ``run.path``, resuming if possible; returns the final state.

    ``init(key)`` builds the state straight into its shardings (or pass ``state``).
    ``step_fn(state, batch, key) -> (state, metrics with a finite "loss")`` is pure;
    ``batch_fn(step)`` is pure in the step (None for a run that is already finished).
    """
    if (state is None) == (init is None):
        raise TypeError("train(): pass exactly one of state= and init=")
    main = is_main_process()
    cfg, key = run.cfg, init_key(run.cfg.seed)
    rd = RunDirectory(run, say=_sayer(progress and main))
    placement = Placement(state if init is None else eqx.filter_eval_shape(init, key), mesh)
    rd.create()
    with RunLock(rd.path, enabled=main):
        rd.check_config()
        with _checkpoint_store(rd, placement) as store:
            if rd.finished(cfg.steps):
                return rd.load_final(placement, store)
            resumed = rd.resume_point(placement, store, cfg.steps)
            start, wall, last = (0, 0.0, None) if resumed is None else resumed[1:]
            state = placement.fresh(state, init, key) if resumed is None else resumed[0]
            if main:
                rd.write_config()  # records e.g. a new `steps` once it is accepted
            ckpt = Checkpointer(rd.ckpt_dir, every=cfg.checkpoint_every, steps=cfg.steps,
                                keep=cfg.keep_checkpoints, keep_every=cfg.keep_every,
                                metadata={"seed": cfg.seed, "config": rd.config}, last=last, store=store,
                                wall_time_s=wall)
            guard = FiniteGuard(("loss",), lambda s: _nonfinite_advice(s, cfg.seed, rd.path, ckpt.last))
            own = [MetricsWriter(rd.metrics_path, log_every=cfg.log_every, steps=cfg.steps),
                   ProgressBar(steps=cfg.steps, desc=rd.path.name, enabled=progress,
                               postfix_every=cfg.log_every)] if main else []
            jstep = compile_step(step_fn, cfg.seed, placement)
            batch_at = lambda s: placement.batch(batch_fn(s), cfg.batch_size)  # noqa: E731
            with contextlib.closing(HookList([guard, *own, *hooks, ckpt])) as all_hooks:
                state = _run(jstep, state, batch_at, range(start, cfg.steps), all_hooks, ckpt.due)
            ckpt.wait()
            # gather is a collective: every process takes part, process 0 writes.
            model = None if run.model_of is None else placement.gather(run.model_of(state))
            if main:
                rd.publish(ckpt.last, model, steps=cfg.steps, wall_time_s=ckpt.wall_time_s)
            barrier(f"published {rd.path}")
            return state


def _run(jstep, state, batch_at, steps: range, hooks: TrainerHooks, due: Callable[[int], bool]):
    # Each update is read back (checked) while the device runs the next one.
    hooks.on_start(steps.start)
    pending = None
    for s in steps:
        state, metrics = jstep(batch_at(s), state, np.asarray(s, np.uint32))
        if pending is not None:
            hooks.on_checked(*pending)  # update s-1: one device->host read, the device busy with s
        pending = (s, metrics)
        hooks.on_step(s, state, metrics)
        if due(s + 1):
            hooks.on_checked(*pending)  # every update up to a checkpoint is checked first
            pending = None
            hooks.on_checkpoint(s + 1, state)
    if not steps:
        hooks.on_checkpoint(steps.stop, state)  # e.g. steps == 0: the checkpointer skips one it holds
    return state


def _checkpoint_store(rd: RunDirectory, placement: Placement):
    # Orbax checkpoints on a mesh (closed on the way out); ``.eqx`` files on one device.
    if not placement.sharded:
        return contextlib.nullcontext(None)
    cfg = rd.spec.cfg
    store = ShardedCheckpoints(rd.ckpt_dir / SHARDED_DIR, keep=cfg.keep_checkpoints, keep_every=cfg.keep_every)
    return contextlib.closing(store)


def _nonfinite_advice(step: int, seed: int, run_dir, last_ckpt) -> str:
    return (f"(batch_fn({step}), step_key(seed={seed}, {step})) in {run_dir}. Training stopped; nothing "
            f"was saved after the last good checkpoint ({last_ckpt}). Resuming would hit the same "
            "values: lower the learning rate, set clip_norm, or fix the step function.")


def _sayer(progress: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        logger.info(msg)
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(msg)

    return say


def compile_step(step_fn, seed: int, placement: Placement | None = None, donate: bool = True):
    """``jstep(batch, state, step) -> (state, metrics)``: `make_update` under ``eqx.filter_jit``.

    ``step_fn`` is an argument, so the arrays it carries (``data.feed=images``'s frozen
    encoders) are inputs placed once on the mesh, not constants. Only the state is donated.
    """
    traces = [0]
    update = make_update(seed, placement)
    if placement is not None and placement.sharded:
        step_fn = place(step_fn, frozen_shardings(step_fn, placement.mesh))

    @eqx.filter_jit(donate="all-except-first" if donate else "none")
    def jitted(fn_and_batch, state, step):
        traces[0] += 1
        if traces[0] == 2:
            warnings.warn("the training step was traced twice: batch or state shapes/dtypes (or static "
                          "fields) changed between steps, so it recompiles", stacklevel=2)
        return update(*fn_and_batch, state, step)

    return lambda batch, state, step: jitted((step_fn, batch), state, step)


def make_update(seed: int, placement: Placement | None = None):
    """``update(step_fn, batch, state, step) -> (state, metrics)``: what the trainer (and the planner)
    compiles. On a mesh the new state is pinned to the old one's shardings: one program."""
    key0 = base_key(seed)

    def update(step_fn, batch, state, step):
        key = jax.random.fold_in(key0, step)
        if placement is None:
            return step_fn(state, batch, key)
        state, metrics = step_fn(placement.with_layout(state), batch, key)
        return placement.constrain(state), metrics  # drops the layout hints again

    return update
