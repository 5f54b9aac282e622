"""A tiny MLP regression trained with the shared trainer.

Imported by the tests, and run as a subprocess by the SIGKILL resume test::

    python tests/_train_toy.py RUN_DIR [--steps N] [--sleep SECONDS]
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from muse_mini.config import TrainConfig
from muse_mini.training.hooks import TrainerHooks
from muse_mini.training.keys import epoch_batch_indices, init_key
from muse_mini.training.loop import train
from muse_mini.training.optim import make_optimizer
from muse_mini.training.rundir import RunSpec


class ToyState(eqx.Module):
    model: eqx.nn.MLP
    opt_state: optax.OptState


@eqx.filter_jit  # module level: compiled once per process, not once per call
def _init_model(key):
    return eqx.nn.MLP(3, 1, 16, 2, key=key)


def toy_cfg(**overrides) -> TrainConfig:
    base = dict(
        steps=24, batch_size=8, optimizer="adamw", lr=1e-2, b1=0.9, b2=0.99,
        weight_decay=1e-4, warmup_steps=4, clip_norm=1.0, seed=0,
        checkpoint_every=4, log_every=1, keep_checkpoints=2,
    )
    return TrainConfig(**{**base, **overrides})


def make_toy(cfg: TrainConfig, *, nan_at: int | None = None, poison_at: int | None = None):
    """``(state, step_fn, batch_fn)``. ``nan_at``: the loss of that step is NaN.
    ``poison_at``: that step's update writes NaN into the weights (loss still finite)."""
    opt = make_optimizer(cfg)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    Y = np.sin(X.sum(1, keepdims=True)).astype(np.float32)
    model = _init_model(init_key(cfg.seed))
    state = ToyState(model, opt.init(eqx.filter(model, eqx.is_inexact_array)))

    def batch_fn(step):
        idx = epoch_batch_indices(len(X), cfg.batch_size, cfg.seed, step)
        return X[idx], Y[idx], np.int32(step)

    def step_fn(state, batch, key):
        x, y, step = batch

        def loss_fn(model):
            # Dropout-like input noise: its only source of randomness is `key`.
            keep = jax.random.bernoulli(key, 0.9, x.shape)
            pred = jax.vmap(model)(jnp.where(keep, x / 0.9, 0.0))
            return jnp.mean((pred - y) ** 2)

        loss, grads = eqx.filter_value_and_grad(loss_fn)(state.model)
        params = eqx.filter(state.model, eqx.is_inexact_array)
        updates, opt_state = opt.update(grads, state.opt_state, params)
        if poison_at is not None:
            updates = jax.tree.map(lambda u: jnp.where(step == poison_at, jnp.nan, u), updates)
        if nan_at is not None:
            loss = jnp.where(step == nan_at, jnp.nan, loss)
        return ToyState(eqx.apply_updates(state.model, updates), opt_state), {"loss": loss}

    return state, step_fn, batch_fn


class Sleep(TrainerHooks):
    """Slows every update down, so a test's SIGKILL lands mid-run."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step(self, step, state, metrics):
        time.sleep(self.seconds)


def run(run_dir, cfg: TrainConfig, *, sleep: float = 0.0, **kw):
    state, step_fn, batch_fn = make_toy(cfg, **kw)
    return train(RunSpec(run_dir, cfg, {"stage": "toy", "data": {"n": 40}}), state=state, step_fn=step_fn,
                 batch_fn=batch_fn, progress=False, hooks=[Sleep(sleep)] if sleep else [])


def kill_after_first_checkpoint(cmd, env, checkpoints, *, timeout: float) -> None:
    """Run ``cmd`` and SIGKILL it as soon as ``checkpoints()`` lists one (the resume tests)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not checkpoints():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    run(args.run_dir, toy_cfg(steps=args.steps), sleep=args.sleep)
