"""The shared trainer: optimisers, schedules, and a resumable, bit-exact training loop.

Every stage (VQGAN tokenizer, base transformer, super-res transformer) supplies

* ``state``    - a pytree (usually an ``eqx.Module``) holding model(s) and optimiser state(s),
* ``step_fn``  - ``(state, batch, key) -> (state, metrics)``, a pure update,
* ``batch_fn`` - ``step -> batch``, a *pure function of the step index*,

and `train` does the rest: jit once, checkpoint, resume, log, guard against NaNs.

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

Run directory layout::

    run_dir/config.json          what was trained: {"train_config": ..., "metadata": ...}
    run_dir/checkpoints/ckpt_XXXXXXXX.eqx   the newest ``keep_checkpoints`` checkpoints
    run_dir/metrics.jsonl        {"step", "time" (unix s), <metrics>} every ``log_every`` updates
    run_dir/final.eqx            the final state (a hard link to / copy of the last ckpt)
    run_dir/DONE.json            written last: {"step", "wall_time_s", "finished_at"}
    run_dir/.lock                flock'ed while a process trains here
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
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
import optax

from muse_mini.config import TrainConfig
from muse_mini.runs.layout import (
    CKPT_DIR, CONFIG_FILE, DONE_FILE, FINAL_FILE, METRICS_FILE, stage_complete,
)
from muse_mini.runs.weights import save_model
from muse_mini.runs.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)

try:  # POSIX only; without it we simply do not guard against concurrent runs.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = [
    "TrainConfig",
    "NonFiniteLossError",
    "ConfigMismatchError",
    "make_schedule",
    "make_optimizer",
    "weight_decay_mask",
    "base_key",
    "step_key",
    "init_key",
    "epoch_batch_indices",
    "TrainState",
    "init_train_state",
    "make_train_step",
    "train",
    "load_final",
    "load_latest",
]

logger = logging.getLogger(__name__)


# Config fields that may change when a run is resumed: none of them changes the
# numbers computed. (``steps`` does change the cosine schedule's length, but
# "train this run for longer" is the one change a researcher legitimately needs.)
RESUMABLE_FIELDS = frozenset({"steps", "checkpoint_every", "log_every", "keep_checkpoints"})




class NonFiniteLossError(FloatingPointError):
    """A guarded metric (default: ``loss``) became NaN/inf; training was stopped."""

    def __init__(self, message: str, *, step: int, values: dict[str, float]):
        super().__init__(message)
        self.step = step
        self.values = values


class ConfigMismatchError(ValueError):
    """A run directory holds a run with a different configuration."""


# =========================================================================== optimisers


def make_schedule(
    lr: float, warmup_steps: int, total_steps: int, end_fraction: float = 0.0
) -> optax.Schedule:
    """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then cosine decay to
    ``lr * end_fraction`` at ``total_steps`` (Muse Tables 4-6: "cosine decay").

    ``lr(t) = lr * t / W`` for ``t < W``; afterwards
    ``end + (lr - end) * (1 + cos(pi * (t - W) / (T - W))) / 2``, constant after ``T``.
    """
    # optax needs a non-empty cosine phase; a run that is all warmup just ends at lr.
    total = max(int(total_steps), int(warmup_steps) + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=lr,
        warmup_steps=int(warmup_steps),
        decay_steps=total,
        end_value=lr * end_fraction,
    )


def weight_decay_mask(params: Any) -> Any:
    """True for leaves with ``ndim >= 2`` (matrices, conv kernels, embeddings).

    Biases, LayerNorm/GroupNorm scales and other vectors are not decayed: they set
    offsets and scales rather than carrying capacity, and pulling a norm's gain
    towards zero fights the normalisation (standard practice since BERT/AdamW).
    """
    return jax.tree.map(lambda x: getattr(x, "ndim", 0) >= 2, params)


def _adafactor_b2(b2: float) -> Callable:
    # Adafactor's usual β2 schedule is 1 - (t+1)^-0.8, which rises towards 1 and
    # acts as bias correction early on. Muse reports β2 = 0.96 (Table 4), so we
    # cap it there: the first ~55 steps follow the schedule, then β2 = 0.96.
    def decay_rate_fn(step, exponent):
        t = jnp.asarray(step + 1, jnp.float32)
        return jnp.minimum(1.0 - t ** (-exponent), b2)

    return decay_rate_fn


def make_optimizer(cfg: Any, end_fraction: float = 0.0) -> optax.GradientTransformation:
    """The optimiser a `TrainConfig` describes, with a warmup + cosine schedule.

    * ``"adam"``: Adam with *L2* weight decay (``wd * θ`` added to the gradient
      before the moment estimates) - Muse Table 5 (VQGAN: Adam, β=(0.9, 0.99),
      weight decay 1e-4), read as the common ``torch.optim.Adam(weight_decay=...)``.
    * ``"adamw"``: Adam with *decoupled* weight decay, ``Δθ = -lr_t (m̂/√v̂ + wd θ)``.
    * ``"adafactor"``: Muse Table 4/6 (β1 = 0.9 momentum, β2 = 0.96, wd 0.045):
      factored second moments + update clipping (block RMS 1), momentum, and
      decoupled decay ``Δθ = -lr_t (u + wd θ)``. We build the chain ourselves instead
      of calling ``optax.adafactor`` because (a) its ``weight_decay_rate`` is *not*
      multiplied by the learning rate (0.045 would shrink every weight by 4.5% per
      step), (b) it cannot cap β2 and (c) with ``multiply_by_parameter_scale`` the
      learning rate would be relative to the weight scale, unlike Muse's 1e-4.

    Weight decay only touches ``ndim >= 2`` leaves (`weight_decay_mask`). With
    ``clip_norm`` set, gradients are first clipped to that global norm.
    Apply it to ``eqx.filter(model, eqx.is_inexact_array)``.
    """
    schedule = make_schedule(cfg.lr, cfg.warmup_steps, cfg.steps, end_fraction)
    decay = (
        [optax.add_decayed_weights(cfg.weight_decay, mask=weight_decay_mask)]
        if cfg.weight_decay
        else []
    )
    clip = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    if cfg.optimizer == "adam":
        core = [*decay, optax.scale_by_adam(cfg.b1, cfg.b2)]
    elif cfg.optimizer == "adamw":
        core = [optax.scale_by_adam(cfg.b1, cfg.b2), *decay]
    elif cfg.optimizer == "adafactor":
        core = [
            optax.scale_by_factored_rms(decay_rate=0.8, decay_rate_fn=_adafactor_b2(cfg.b2)),
            optax.clip_by_block_rms(1.0),
            optax.ema(cfg.b1, debias=False),  # momentum, as optax.adafactor does it
            *decay,
        ]
    else:
        raise ValueError(
            f"unknown optimizer {cfg.optimizer!r}; expected 'adam', 'adamw' or 'adafactor'"
        )
    return optax.chain(*clip, *core, optax.scale_by_learning_rate(schedule))


# =========================================================================== keys & data


def base_key(seed: int) -> jax.Array:
    """The run's root key (raw uint32, so it serialises like any array)."""
    return jax.random.PRNGKey(seed)


def step_key(seed: int, step: int) -> jax.Array:
    """The key of update ``step``: ``fold_in(base_key(seed), step)``.

    Folding in the step (rather than carrying a key in the state and splitting it)
    makes the randomness of every update a function of ``(seed, step)`` alone, so
    resuming needs no PRNG state and any single step can be reproduced in isolation.
    """
    return jax.random.fold_in(base_key(seed), step)


def init_key(seed: int) -> jax.Array:
    """A key for model initialisation, independent of every `step_key`."""
    return jax.random.split(base_key(seed))[1]


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.flags.writeable = False  # it is cached; nobody may mutate it
    return perm


def epoch_batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices of batch ``step``: epochs are fresh permutations of ``range(n)``.

    Epoch ``e`` uses ``np.random.default_rng([seed, e]).permutation(n)``; each epoch
    has ``n // batch_size`` batches (the ragged remainder is dropped so every batch
    has the same shape and the step function compiles once).
    """
    if not 0 < batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n={n}], got {batch_size}")
    per_epoch = n // batch_size
    epoch, i = divmod(int(step), per_epoch)
    return _epoch_permutation(n, seed, epoch)[i * batch_size : (i + 1) * batch_size].copy()


# =========================================================================== run directory


class TrainState(eqx.Module):
    """What a single-model stage checkpoints: the model and its optimiser state."""

    model: Any
    opt_state: Any


def init_train_state(model, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(model, optimizer.init(eqx.filter(model, eqx.is_inexact_array)))


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation):
    """``step_fn(state, batch, key)`` for :func:`train`, from ``loss_fn(model, batch, key)``.

    ``loss_fn`` returns ``(loss, metrics)``. The base and super-res stages share
    this step; only their losses differ.
    """

    def step_fn(state: TrainState, batch, key):
        (loss, metrics), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
            state.model, batch, key
        )
        params = eqx.filter(state.model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        model = eqx.apply_updates(state.model, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree_utils.tree_norm(grads))
        return TrainState(model, opt_state), metrics

    return step_fn


def _json_default(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON-serialisable")


def _normalise(x: Any) -> Any:
    """What ``x`` looks like after a JSON round trip (tuples -> lists, ...).

    NaN/inf are refused here, at start-up, rather than at the first checkpoint."""
    try:
        return json.loads(json.dumps(x, default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"train(): cfg/metadata must be JSON-serialisable: {e}") from e


def _validate(cfg: Any) -> None:
    problems = [
        f"{name}={getattr(cfg, name)!r} (need >= {lo})"
        for name, lo in [("steps", 0), ("checkpoint_every", 1), ("log_every", 1),
                         ("keep_checkpoints", 0)]
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < lo
    ]
    if problems:
        raise ValueError(f"invalid TrainConfig: {', '.join(problems)}")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def _config_differences(old: dict, new: dict, ignore: Sequence[str] = (), defaults: dict | None = None) -> list[str]:
    """Fields that differ; a field the old run did not store counts as ``defaults[field]``
    (configuration fields added later default to the behaviour runs had before them)."""
    a, b = {**_flatten(defaults or {}), **_flatten(old)}, _flatten(new)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if k.rsplit(".", 1)[-1] in RESUMABLE_FIELDS or any(k == p or k.startswith(p + ".") for p in ignore):
            continue
        if a.get(k, "<missing>") != b.get(k, "<missing>"):
            diffs.append(f"{k}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}")
    return diffs


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _check_config(run_dir: Path, config: dict, ignore: Sequence[str] = (), defaults: dict | None = None) -> None:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return
    diffs = _config_differences(json.loads(path.read_text()), config, ignore, defaults)
    if diffs:
        raise ConfigMismatchError(
            f"{path} was written by a run with a different configuration; refusing to "
            f"resume it. Differing fields: {'; '.join(diffs)}. Use a new run directory "
            f"(or delete {run_dir} to start over). Only {sorted(RESUMABLE_FIELDS)} may "
            "change on resume."
        )


def _write_config(run_dir: Path, config: dict) -> None:
    path = run_dir / CONFIG_FILE
    if not path.exists() or json.loads(path.read_text()) != config:
        _write_json(path, config)


class _RunLock:
    """An exclusive flock on ``run_dir/.lock``; the kernel drops it if we die."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.fd = None

    def __enter__(self):
        if fcntl is None:  # pragma: no cover
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise RuntimeError(
                f"{self.path.parent} is already being trained by another process "
                "(or another train() call in this one)"
            ) from None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock


def load_final(run_dir: str | os.PathLike, like: Any) -> Any:
    """The final state of a finished run; ``like`` is a skeleton (see `load_checkpoint`)."""
    run_dir = Path(run_dir)
    if not stage_complete(run_dir):
        raise FileNotFoundError(
            f"{run_dir} holds no finished run ({DONE_FILE} or {FINAL_FILE} missing); "
            f"latest checkpoint: {latest_checkpoint(run_dir / CKPT_DIR)}"
        )
    return load_checkpoint(run_dir / FINAL_FILE, like)[0]


def load_latest(run_dir: str | os.PathLike, like: Any) -> tuple[Any, int]:
    """``(state, step)`` of the newest checkpoint, e.g. to inspect a run in progress."""
    path = latest_checkpoint(Path(run_dir) / CKPT_DIR)
    if path is None:
        raise FileNotFoundError(f"no checkpoints in {Path(run_dir) / CKPT_DIR}")
    state, meta = load_checkpoint(path, like)
    return state, meta["step"]


def _publish_final(ckpt: Path, final: Path) -> None:
    # A hard link costs no space or time; fall back to a copy where links fail.
    tmp = final.with_name(f".{final.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(ckpt, tmp)
        os.replace(tmp, final)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write_bytes(final, ckpt.read_bytes())


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


# =========================================================================== the trainer


def _scalar(name: str, v: Any) -> float | int | bool:
    a = np.asarray(v)
    if a.size != 1:
        raise ValueError(f"metric {name!r} must be a scalar, got shape {a.shape}")
    return a.item()


@eqx.filter_jit
def _finite_leaves(tree):
    return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), eqx.filter(tree, eqx.is_inexact_array))


def _first_nonfinite_leaf(tree) -> str | None:
    flags, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(_finite_leaves(tree)))
    for path, ok in flags:
        if not ok:
            return jax.tree_util.keystr(path)
    return None


def _copy_arrays(tree):
    # The jitted step donates its input buffers; copy the caller's initial state so
    # their arrays stay valid after train() returns.
    # (NumPy leaves are never donated, and converting them could change their dtype.)
    # device_put(may_alias=False) copies buffers without compiling a copy per shape.
    return jax.tree.map(
        lambda x: jax.device_put(x, may_alias=False) if isinstance(x, jax.Array) else x, tree
    )


def train(
    run_dir: str | os.PathLike,
    *,
    state: Any,
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
) -> Any:
    """Train ``state`` for ``cfg.steps`` updates in ``run_dir``, resuming if possible.

    Arguments:
        state: the freshly initialised state. Used as-is on a fresh start; on resume
            it is the skeleton the checkpoint is loaded into (its arrays are ignored).
        step_fn: ``(state, batch, key) -> (state, metrics)``, pure; jitted once here.
            ``metrics`` maps names to scalars and must contain ``check_finite``.
        batch_fn: ``step -> batch`` (a pytree of arrays with fixed shapes), a pure
            function of the step, e.g. via `epoch_batch_indices`.
        cfg: a `TrainConfig`; ``seed`` defines every key (`step_key`).
        metadata: the stage's full configuration as a JSON-able dict; stored in
            ``config.json`` and in every checkpoint header.
        callbacks: ``cb(step, state, metrics)`` called after update ``step`` was
            dispatched (``metrics`` are device scalars; ``float()`` syncs). Don't keep
            a reference to ``state``: its buffers are donated to the next update.
        check_finite: metric names that must stay finite (`NonFiniteLossError`).
        donate: donate the state's buffers to the update (halves peak memory).
        config_ignore: dotted prefixes of ``metadata`` fields this run does not
            depend on (e.g. ``"config.superres"`` for the base model): they may
            differ on resume, and the stored ``config.json`` takes the new values.
        config_defaults: ``metadata``-shaped defaults (e.g. ``{"config":
            MuseConfig().to_dict()}``): a field missing from a stored
            ``config.json`` (written before the field existed) counts as its
            default, so adding a field that defaults to the old behaviour keeps
            finished runs valid.
        model_of: ``state -> model``; when given, the finished run also writes
            the model alone to ``model.eqx`` (what sampling loads).

    Returns the final state. A finished run (``DONE.json``) returns immediately with
    the stored final state; calling again with a larger ``cfg.steps`` continues it.

    Failure behaviour:
        * the newest checkpoint is unreadable -> `CheckpointError` naming it; we do
          *not* silently fall back to an older one (that would hide disk problems and
          silently redo work) - delete the named file to resume from the previous one.
        * ``config.json`` differs (other than `RESUMABLE_FIELDS`) -> `ConfigMismatchError`.
        * a guarded metric is NaN/inf at update ``s`` -> `NonFiniteLossError` naming
          ``s``; nothing is saved after the last good checkpoint. Checkpoints are only
          written after every update up to them has been checked, and after checking
          that the state itself is finite (an inf gradient can poison the weights one
          step before the loss shows it).

    The finiteness check costs one device->host sync per update. It is lagged by one
    update (we check update ``s-1`` after dispatching ``s``), so the host prepares the
    next batch while the device works and the accelerator is never left idle.
    """
    _validate(cfg)
    config = _normalise({"train_config": cfg, "metadata": metadata})
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / CKPT_DIR
    ckpt_dir.mkdir(exist_ok=True)
    callbacks = list(callbacks or ())
    check_finite = tuple(check_finite)

    with _RunLock(run_dir):
        _check_config(run_dir, config, [f"metadata.{p}" for p in config_ignore],
                      _normalise({"metadata": config_defaults or {}}))

        done_path = run_dir / DONE_FILE
        if stage_complete(run_dir):
            done = json.loads(done_path.read_text())
            if done["step"] == cfg.steps:
                _say(f"{run_dir}: finished run ({cfg.steps} steps); loading {FINAL_FILE}", progress)
                _write_config(run_dir, config)  # only `config_ignore` fields can differ
                return load_final(run_dir, state)
            if done["step"] > cfg.steps:
                raise ValueError(
                    f"{run_dir} already finished {done['step']} steps > cfg.steps={cfg.steps}"
                )
            _say(f"{run_dir}: extending finished run {done['step']} -> {cfg.steps} steps", progress)
        done_path.unlink(missing_ok=True)  # written again, last, when we finish

        # Temporaries left by a killed writer; we hold the lock, so nobody else writes.
        for p in ckpt_dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)

        latest = latest_checkpoint(ckpt_dir)
        wall_before = 0.0
        if latest is not None:
            try:
                state, meta = load_checkpoint(latest, state)
            except CheckpointError as e:
                raise CheckpointError(
                    f"{e}. Cannot resume from the newest checkpoint. If the file is damaged, "
                    f"delete {latest} to resume from the previous checkpoint."
                ) from None
            start = int(meta["step"])
            if checkpoint_path(ckpt_dir, start).name != latest.name:
                raise CheckpointError(f"{latest} holds step {start}, not the step in its name")
            if start > cfg.steps:
                raise ValueError(
                    f"{latest} is at step {start}, beyond cfg.steps={cfg.steps}; "
                    "use a larger cfg.steps or a new run directory"
                )
            wall_before = float(meta.get("wall_time_s", 0.0))
            _say(f"{run_dir}: resuming from {latest.name} (step {start})", progress)
        else:
            start = 0
            state = _copy_arrays(state)

        _write_config(run_dir, config)  # records e.g. a new `steps` once it is accepted
        metrics_path = run_dir / METRICS_FILE
        _truncate_metrics(metrics_path, start)

        jstep = _jit_step(step_fn, cfg.seed, check_finite, donate)
        t0 = time.time()
        wall = lambda: wall_before + time.time() - t0  # noqa: E731

        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc=run_dir.name)
        log_file = open(metrics_path, "a")
        last_ckpt = latest

        def resolve(pending):
            # Waits for update s; raises before anything derived from it is saved.
            s, metrics, ok = pending
            if not bool(ok):
                values = {k: _scalar(k, metrics[k]) for k in check_finite}
                bad = {k: v for k, v in values.items() if not np.isfinite(v)}
                raise NonFiniteLossError(
                    f"non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} at step {s} "
                    f"(batch_fn({s}), step_key(seed={cfg.seed}, {s})) in {run_dir}. Training "
                    f"stopped; nothing was saved after the last good checkpoint "
                    f"({last_ckpt}). Resuming would hit the same values: lower the learning "
                    "rate, set clip_norm, or fix the step function.",
                    step=s,
                    values=values,
                )
            if s % cfg.log_every == 0 or s == cfg.steps - 1:
                row = {k: _scalar(k, v) for k, v in metrics.items()}
                log_file.write(json.dumps({"step": s, "time": time.time(), **row}) + "\n")
                log_file.flush()
                if "loss" in row:
                    bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
            bar.update(1)

        def checkpoint(step):
            bad = _first_nonfinite_leaf(state)
            if bad is not None:
                raise NonFiniteLossError(
                    f"state after update {step - 1} has non-finite values in leaf {bad} "
                    f"({run_dir}); not saving it. Last good checkpoint: {last_ckpt}",
                    step=step - 1,
                    values={},
                )
            # Metrics up to this checkpoint must be on disk before the checkpoint is.
            log_file.flush()
            os.fsync(log_file.fileno())
            meta = {"step": step, "seed": cfg.seed, "wall_time_s": wall(), "config": config}
            path = save_checkpoint(checkpoint_path(ckpt_dir, step), state, metadata=meta)
            prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)
            return path

        try:
            pending = None
            for s in range(start, cfg.steps):
                batch = batch_fn(s)
                state, metrics, ok = jstep(batch, state, np.asarray(s, np.uint32))
                if pending is not None:
                    resolve(pending)
                pending = (s, metrics, ok)
                for cb in callbacks:
                    cb(s, state, metrics)
                if (s + 1) % cfg.checkpoint_every == 0 or s + 1 == cfg.steps:
                    resolve(pending)
                    pending = None
                    last_ckpt = checkpoint(s + 1)
            if pending is not None:  # pragma: no cover - the last step always checkpoints
                resolve(pending)
            if not list_checkpoints(ckpt_dir) or list_checkpoints(ckpt_dir)[-1][0] != cfg.steps:
                last_ckpt = checkpoint(cfg.steps)  # e.g. steps == 0
        finally:
            log_file.close()
            bar.close()

        _publish_final(last_ckpt, run_dir / FINAL_FILE)
        if model_of is not None:  # the weights alone, for sampling (runs.weights)
            save_model(run_dir, model_of(state), metadata=config)
        finished = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        _write_json(done_path, {"step": cfg.steps, "wall_time_s": wall(), "finished_at": finished})
        return state


def _say(msg: str, progress: bool) -> None:
    logger.info(msg)
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(msg)


def _jit_step(step_fn, seed: int, check_finite: tuple[str, ...], donate: bool):
    key0 = base_key(seed)
    traces = [0]

    # Argument order (batch, state, step) lets "all-except-first" donate the state
    # while never donating the batch, which may alias a dataset the stage keeps.
    @eqx.filter_jit(donate="all-except-first" if donate else "none")
    def jstep(batch, state, step):
        traces[0] += 1
        if traces[0] == 2:
            warnings.warn(
                "the training step was traced twice: batch or state shapes/dtypes (or "
                "static fields) changed between steps, so it recompiles",
                stacklevel=2,
            )
        state, metrics = step_fn(state, batch, jax.random.fold_in(key0, step))
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

    return jstep
