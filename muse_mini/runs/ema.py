"""Offline exponential moving average of a run's checkpoints (Muse §3).

"We checkpoint every 5000 steps, then perform EMA offline on the checkpointed weights
with a decay factor of 0.7." Over checkpoints ``x_1 .. x_n`` in step order,
``avg_k = decay * avg_{k-1} + (1 - decay) * x_k``: at 0.7 the newest weighs 0.3, about
three count. Train with ``*_train.keep_every=5000`` to keep those checkpoints; the
result is ``run_dir/model_ema.eqx``, which ``load_base(run, ema=True)`` reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.runs.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from muse_mini.runs.layout import CKPT_DIR, SHARDED_DIR, read_run_config
from muse_mini.runs.sharded import ShardedCheckpoints, sharded_steps

EMA_FILE = "model_ema.eqx"
PAPER_DECAY = 0.7  # Muse §3
PAPER_EVERY = 5000  # Muse §3: "we checkpoint every 5000 steps"


def check_decay(decay) -> float:
    """``decay`` as a float in (0, 1): 0 would keep only the newest checkpoint, 1 only the first."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
        raise ValueError(f"--decay: expected a number strictly between 0 and 1 (the paper: 0.7), got {decay!r}")
    return float(decay)


def _accumulator(x) -> np.ndarray:
    """A host copy of ``x`` in at least float32, so bfloat16 weights do not lose the small updates."""
    return np.array(x, dtype=np.promote_types(np.asarray(x).dtype, np.float32))


def ema_average(trees: Iterable[Any], decay: float) -> Any:
    """The EMA of ``trees``, oldest first, streamed: only the running average and one tree are held.

    Float leaves are averaged in at least float32 and cast back; other leaves are the newest tree's.
    """
    decay = check_decay(decay)
    acc = treedef = dtypes = None
    for tree in trees:
        leaves, this_def = jax.tree_util.tree_flatten(tree)
        del tree  # else this loop variable holds it while the next tree loads
        if acc is None:
            treedef = this_def
            dtypes = [x.dtype if eqx.is_inexact_array(x) else None for x in leaves]
            acc = [x if d is None else _accumulator(x) for x, d in zip(leaves, dtypes)]
        elif this_def != treedef:
            raise ValueError("ema_average: the trees do not share one structure")
        else:
            acc = [x if d is None else _blend(a, x, decay) for a, x, d in zip(acc, leaves, dtypes)]
        del leaves
    if acc is None:
        raise ValueError("ema_average: no trees to average")
    return jax.tree_util.tree_unflatten(
        treedef, [a if d is None else jnp.asarray(a, dtype=d) for a, d in zip(acc, dtypes)])


def _blend(acc: np.ndarray, x, decay: float) -> np.ndarray:
    """``decay * acc + (1 - decay) * x``, in place."""
    if acc.shape != np.shape(x):
        raise ValueError(f"ema_average: a leaf changed shape from {acc.shape} to {np.shape(x)}")
    acc *= decay
    acc += (1 - decay) * np.asarray(x, acc.dtype)
    return acc


def check_every(every) -> int | None:
    """``every`` as None (all checkpoints) or an integer >= 1."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"--every: expected an integer >= 1 (the paper: {PAPER_EVERY}), got {every!r}")
    return every


def select_checkpoints(steps: list[int], every: int | None) -> list[int]:
    """``steps`` (sorted), or with ``every`` only the multiples of it (the paper: 5000)."""
    steps = sorted(steps)
    if check_every(every) is None:
        return steps
    chosen = [s for s in steps if s % every == 0]
    if not chosen:
        raise ValueError(f"--every {every}: no checkpoint step is a multiple of it (steps: {steps}); "
                         "choose another --every, or train with keep_every set to it")
    return chosen


def planned_steps(run_dir, every: int | None = None) -> list[int]:
    """The checkpoint steps of ``run_dir`` that an average with ``every`` would use (checked, never empty)."""
    run_dir = Path(run_dir)
    check_every(every)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--run: no run directory {run_dir}")
    available = sorted({step for step, _ in list_checkpoints(run_dir / CKPT_DIR)}
                       | set(sharded_steps(run_dir / CKPT_DIR / SHARDED_DIR)))
    if not available:
        raise FileNotFoundError(f"--run: {run_dir / CKPT_DIR} holds no checkpoints to average")
    return select_checkpoints(available, every)


def checkpoint_models(run_dir, like_model, model_field: str = "model",
                      steps: Iterable[int] | None = None) -> Iterator[tuple[int, Any]]:
    """``(step, model)`` for each checkpoint (only ``steps`` if given), oldest first; reads only the model subtree."""
    wanted = None if steps is None else set(steps)
    files = dict(list_checkpoints(Path(run_dir) / CKPT_DIR))
    sharded_dir = Path(run_dir) / CKPT_DIR / SHARDED_DIR
    orbax = sharded_steps(sharded_dir)  # a run on a mesh: Orbax steps
    reader = ShardedCheckpoints(sharded_dir, keep=0) if orbax else None
    try:
        for step in sorted(set(files) | set(orbax)):
            if wanted is not None and step not in wanted:
                continue
            if step in files:
                yield step, load_checkpoint(files[step], like_model, prefix=f".{model_field}")[0]
            else:
                yield step, reader.restore_part(step, f".{model_field}", like_model)
    finally:
        if reader is not None:
            reader.close()


def _recording(models: Iterable[tuple[int, Any]], steps: list[int]) -> Iterator[Any]:
    """The models alone, appending each one's step to ``steps``."""
    for step, model in models:
        steps.append(step)
        yield model
        del model  # let the caller's previous model go before the next is loaded


def write_ema(run_dir, *, decay: float = PAPER_DECAY, every: int | None = None, like_model: Any,
              model_field: str = "model") -> Path:
    """Average the checkpoints of ``run_dir`` into ``model_ema.eqx`` (metadata: the run's config and ``"ema"``)."""
    run_dir = Path(run_dir)
    decay = check_decay(decay)
    chosen = planned_steps(run_dir, every)
    config = read_run_config(run_dir)
    averaged: list[int] = []
    models = checkpoint_models(run_dir, like_model, model_field, steps=chosen)
    model = ema_average(_recording(models, averaged), decay)
    if averaged != chosen:
        raise FileNotFoundError(f"{run_dir / CKPT_DIR}: checkpoints {sorted(set(chosen) - set(averaged))} "
                                "vanished while averaging (pruned by a run still training?); run again")
    metadata = {**config, "ema": {"decay": decay, "every": every, "steps": averaged}}
    return save_checkpoint(run_dir / EMA_FILE, model, metadata=metadata, step=averaged[-1])
