"""The toy base transformer trained by the shared trainer on a device mesh.

Run as a subprocess by the multi-device tests (the device count is fixed when
JAX starts, so each mesh needs its own process)::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/multidevice/_train_sharded.py RUN_DIR --mesh data=2,fsdp=2,tensor=2

With ``MUSE_COORDINATOR``/``MUSE_NUM_PROCESSES``/``MUSE_PROCESS_ID`` set,
it is one process of a multi-process job (``jax.distributed``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from muse_mini.parallel import hosts

hosts.initialize()  # before any other JAX call

from muse_mini.config import get_recipe  # noqa: E402
from muse_mini.models.build import build_base  # noqa: E402
from muse_mini.parallel.mesh import make_mesh, parse_mesh  # noqa: E402
from muse_mini.parallel.rules import batch_sharding  # noqa: E402
from muse_mini.training.keys import epoch_batch_indices  # noqa: E402
from muse_mini.training.loop import train  # noqa: E402
from muse_mini.training.losses import init_train_state, make_train_step, stage_loss  # noqa: E402
from muse_mini.training.optim import make_optimizer  # noqa: E402
from muse_mini.training.rundir import RunSpec  # noqa: E402

OVERRIDES = ("base.depth=2", "base.width=64", "base.mlp_dim=128", "base.num_heads=4",
             "base_train.batch_size=16", "base_train.warmup_steps=2", "base_train.checkpoint_every=3",
             "base_train.log_every=1")


def toy_config(steps: int):
    return get_recipe("smoke", [*OVERRIDES, f"base_train.steps={steps}"])


def toy_data(cfg, n: int = 64):
    """Random token maps and text embeddings of the toy base model's shapes."""
    rng = np.random.default_rng(0)
    seq, length = cfg.tokenizer.grid ** 2, cfg.text.max_length
    return {
        "tokens": rng.integers(0, cfg.tokenizer.codebook_size, (n, seq)).astype(np.int32),
        "text": rng.normal(size=(n, length, cfg.text.width)).astype(np.float32),
        "text_mask": np.arange(length)[None, :] < rng.integers(1, length, (n, 1)),
    }


def run(run_dir, mesh_text: str, steps: int, sleep: float = 0.0, progress: bool = False):
    cfg = toy_config(steps)
    tc = cfg.base_train
    mesh = make_mesh(parse_mesh(mesh_text))
    data = toy_data(cfg)
    rows = hosts.local_rows(batch_sharding(mesh), tc.batch_size)
    optimizer = make_optimizer(tc)

    def batch_fn(step):
        if sleep:
            time.sleep(sleep)
        idx = epoch_batch_indices(len(data["tokens"]), tc.batch_size, tc.seed, step)[rows]
        return {k: v[idx] for k, v in data.items()}

    spec = RunSpec(run_dir, tc, {"stage": "base", "config": cfg.to_dict()}, model_of=lambda s: s.model)
    return train(spec, init=lambda key: init_train_state(build_base(cfg, key), optimizer),
                 step_fn=make_train_step(stage_loss(cfg, "base"), optimizer), batch_fn=batch_fn, mesh=mesh,
                 progress=progress)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--mesh", default="data=1")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--sleep", type=float, default=0.0)
    a = p.parse_args()
    run(a.run_dir, a.mesh, a.steps, a.sleep)
