"""Training on a mesh of 8 simulated CPU devices (run by tests/test_multidevice.py).

JAX fixes its device count at start-up, so this directory runs in its own
pytest process with ``--xla_force_host_platform_device_count=8``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

from muse_mini.config import MeshConfig
from muse_mini.models.build import build_base
from muse_mini.parallel.mesh import make_mesh
from muse_mini.runs.layout import read_metrics, stage_complete
from muse_mini.runs.load import _load_transformer
from muse_mini.runs.sharded import sharded_steps
from muse_mini.training.keys import init_key
from muse_mini.training.loop import compile_step
from muse_mini.training.losses import init_train_state, make_train_step, stage_loss
from muse_mini.training.optim import make_optimizer
from muse_mini.training.placement import Placement

sys.path.insert(0, str(Path(__file__).parent))
from _train_sharded import toy_config, toy_data  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1]))
from _train_toy import kill_after_first_checkpoint  # noqa: E402

SCRIPT = Path(__file__).parent / "_train_sharded.py"
ROOT = Path(__file__).parents[2]
STEPS = 12


def test_eight_simulated_devices():
    assert jax.device_count() == 8, "run through tests/test_multidevice.py (it sets XLA_FLAGS)"


def _three_steps(mesh):
    cfg = toy_config(3)
    tc, data = cfg.base_train, toy_data(cfg)
    opt = make_optimizer(tc)
    init = lambda key: init_train_state(build_base(cfg, key), opt)  # noqa: E731
    key = init_key(tc.seed)
    where = Placement(eqx.filter_eval_shape(init, key), mesh)
    state = where.fresh(init=init, key=key)
    jstep = compile_step(make_train_step(stage_loss(cfg, "base"), opt), tc.seed, where, donate=False)
    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for s in range(3):
            batch = where.batch({k: v[s * 16:(s + 1) * 16] for k, v in data.items()}, tc.batch_size)
            state, metrics = jstep(batch, state, np.asarray(s, np.uint32))
            losses.append(float(metrics["loss"]))
    assert not [w for w in caught if "traced twice" in str(w.message)]  # the hints do not retrace
    assert state.model.decoder.blocks.layout is None and state.model.decoder.token_embed.layout is None
    return state, losses


def test_layout_hints_put_sharding_constraints_in_the_traced_loss_only_when_set():
    cfg = toy_config(1)
    model = build_base(cfg, jax.random.key(0))
    batch = {k: v[:16] for k, v in toy_data(cfg).items()}
    where = Placement(eqx.filter_eval_shape(lambda: model), make_mesh(MeshConfig(data=2, fsdp=2, tensor=2)))
    loss = stage_loss(cfg, "base")

    def constraints(m):
        jaxpr = eqx.filter_make_jaxpr(loss)(m, batch, jax.random.key(1))[0]
        return str(jaxpr).count("sharding_constraint")

    laid_out = where.with_layout(model)
    assert laid_out.decoder.blocks.layout is where.layout and laid_out.decoder.token_embed.layout is where.layout
    assert constraints(model) == 0
    assert constraints(laid_out) >= 2  # the table before its lookup; each scanned layer's weights and input
    one = Placement(eqx.filter_eval_shape(lambda: model), make_mesh(MeshConfig()))
    assert one.with_layout(model) is model  # one device: no hints


def test_sharded_train_step_equals_single_device():
    one, one_losses = _three_steps(make_mesh(MeshConfig()))
    many, many_losses = _three_steps(make_mesh(MeshConfig(data=2, fsdp=2, tensor=2)))
    np.testing.assert_allclose(many_losses, one_losses, rtol=1e-5)
    flat = jax.tree_util.tree_flatten_with_path
    for (path, a), (_, b) in zip(flat(eqx.filter(one, eqx.is_inexact_array))[0],
                                 flat(eqx.filter(many, eqx.is_inexact_array))[0], strict=True):
        # Attention is invariant to a key bias (it adds q·b to every key's score), so
        # its gradient is rounding noise, which Adafactor's normalised update amplifies.
        # An embedding row's gradient is a scatter-add whose order differs across shards;
        # for a token seen once or twice the same normalisation lifts that rounding to
        # ~2e-6 on some CPUs (AMD EPYC here), so the tables get the looser bound too.
        name = jax.tree_util.keystr(path)
        noise_only = "k_bias" in name or "token_embed" in name
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5 if noise_only else 1e-6,
                                   err_msg=jax.tree_util.keystr(path))
    # The weights really are split: fc1 (layers, embed, mlp) = (2, 64, 128) over fsdp × tensor.
    fc1 = many.model.decoder.blocks.blocks.mlp.fc1.weight
    assert {s.data.shape for s in fc1.addressable_shards} == {(2, 32, 64)}
    q = many.model.decoder.blocks.blocks.self_attn.q_proj  # (layers, embed, heads, kv)
    assert {s.data.shape for s in q.addressable_shards} == {(2, 32, 2, 16)}
    # Adam/Adafactor moments follow their weights.
    mu = jax.tree.leaves(many.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
    moments = [x.mu.decoder.blocks.blocks.mlp.fc1.weight for x in mu if hasattr(x, "mu")]
    assert moments and moments[0].sharding.spec == fc1.sharding.spec
    # The step kept the layout it was given: one compiled program for every step.
    assert fc1.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")


# --------------------------------------------------------------------------- subprocess runs


def _env(tmp_path, devices: int, **extra):
    return {
        **os.environ, **extra,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path.parent / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def _train(tmp_path, run_dir, mesh: str, devices: int = 8, *extra, **env):
    cmd = [sys.executable, str(SCRIPT), str(run_dir), "--mesh", mesh, "--steps", str(STEPS), *extra]
    return subprocess.run(cmd, env=_env(tmp_path, devices, **env), capture_output=True, text=True, timeout=400)


def _model(run_dir):
    return _load_transformer(run_dir, build_base)


def _leaves(model):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))]


def _assert_close(expected, actual, rtol=1e-4, atol=1e-6):
    """Allclose per weight; the key bias, whose gradient is only rounding noise, a little looser."""
    flat = jax.tree_util.tree_flatten_with_path
    for (path, a), (_, b) in zip(flat(eqx.filter(expected, eqx.is_inexact_array))[0],
                                 flat(eqx.filter(actual, eqx.is_inexact_array))[0], strict=True):
        name = jax.tree_util.keystr(path)
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=rtol,
                                   atol=max(atol, 1e-5) if "k_bias" in name else atol, err_msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run on fsdp=8."""
    tmp = tmp_path_factory.mktemp("reference")
    out = _train(tmp, tmp / "run", "fsdp=8")
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "run"


def _killed_run(tmp_path, mesh: str):
    """A run on ``mesh`` killed with SIGKILL after its first sharded checkpoint."""
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, str(SCRIPT), str(run_dir), "--mesh", mesh, "--steps", str(STEPS), "--sleep", "0.5"]
    kill_after_first_checkpoint(cmd, _env(tmp_path, 8), lambda: sharded_steps(run_dir / "checkpoints" / "sharded"),
                                timeout=300)
    assert not stage_complete(run_dir), "the kill came too late"
    assert 0 < sharded_steps(run_dir / "checkpoints" / "sharded")[-1] < STEPS
    return run_dir


def test_sigkill_then_resume_on_the_same_mesh_is_bit_identical(reference, tmp_path):
    run_dir = _killed_run(tmp_path, "fsdp=8")
    shutil.copytree(run_dir, tmp_path / "killed-copy")
    resumed = _train(tmp_path, run_dir, "fsdp=8")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for a, b in zip(_leaves(_model(reference)), _leaves(_model(run_dir)), strict=True):
        np.testing.assert_array_equal(a, b)
    # The same interrupted run, resumed on another mesh shape (fsdp 8 -> 4 × data 2).
    other = _train(tmp_path, tmp_path / "killed-copy", "data=2,fsdp=4")
    assert other.returncode == 0, other.stderr[-3000:]
    _assert_close(_model(reference), _model(tmp_path / "killed-copy"))


def test_sharded_run_resumes_on_one_device(reference, tmp_path):
    """Orbax restores the fsdp=8 checkpoints into a one-device mesh; extending the run works."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    out = _train(tmp_path, run_dir, "data=1", 8, "--steps", str(STEPS + 3))
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run_dir / "DONE.json").read_text())["step"] == STEPS + 3
    assert read_metrics(run_dir)["step"].tolist() == list(range(STEPS + 3))  # each update once
    assert (run_dir / "final.eqx").is_file()  # one device: single-file checkpoints again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(reference, tmp_path):
    """2 processes × 4 devices (jax.distributed on localhost, gloo) = 1 process × 8 devices."""
    run_dir = tmp_path / "run"

    def two_processes(steps: int):
        port = _free_port()
        cmd = [sys.executable, str(SCRIPT), str(run_dir), "--mesh", "fsdp=8", "--steps", str(steps)]
        procs = [subprocess.Popen(cmd, env=_env(tmp_path, 4, MUSE_COORDINATOR=f"localhost:{port}",
                                                MUSE_NUM_PROCESSES="2", MUSE_PROCESS_ID=str(i)),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
        outs = [p.communicate(timeout=400)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(o[-3000:] for o in outs)

    two_processes(STEPS)
    _assert_close(_model(reference), _model(run_dir))  # gloo sums in another order
    # Extending the finished run: process 0 alone decides and clears DONE.json, and tells the other.
    two_processes(STEPS + 3)
    assert json.loads((run_dir / "DONE.json").read_text())["step"] == STEPS + 3
    assert read_metrics(run_dir)["step"].tolist() == list(range(STEPS + 3))


class _RandomText:
    """A stand-in text encoder: fixed random embeddings per prompt (no weights to load)."""

    def __init__(self, cfg):
        self.width, self.length = cfg.text.width, cfg.text.max_length

    def encode(self, prompts):
        rng = np.random.default_rng([len(p) for p in prompts])
        mask = np.arange(self.length)[None, :] < 5
        return rng.normal(size=(len(prompts), self.length, self.width)).astype(np.float32), np.repeat(
            mask, len(prompts), 0)


def test_generation_with_the_batch_split_over_the_mesh_gives_the_same_tokens():
    from muse_mini.models.build import build_tokenizer
    from muse_mini.pipeline import Pipeline

    cfg = toy_config(1)
    base = build_base(cfg, jax.random.key(1))
    tokenizer = build_tokenizer(cfg, "base", jax.random.key(2))
    prompts = ["a red circle", "two blue squares", "a green triangle left of a circle"]
    one = Pipeline(cfg, _RandomText(cfg), tokenizer, base).generate(prompts, num_per_prompt=2, seed=3, stage="base")
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = Pipeline(cfg, _RandomText(cfg), tokenizer, base, mesh=mesh)
    assert sharded.base.decoder.head.out.weight.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    many = sharded.generate(prompts, num_per_prompt=2, seed=3, stage="base")
    np.testing.assert_array_equal(np.asarray(many.base_trajectory.tokens_BxN), np.asarray(one.base_trajectory.tokens_BxN))
    assert np.abs(many.images.astype(int) - one.images).max() <= 1  # uint8 pixels, rounding


def test_training_commands_take_the_mesh_as_overrides(tmp_path, capsys):
    from muse_mini.cli import main
    from muse_mini.config import SMOKE_OVERRIDES

    mesh = ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]
    small = [*SMOKE_OVERRIDES, "tokenizer_train.steps=4", "base_train.steps=4", "data.num_examples=64", *mesh]
    tok, base = tmp_path / "tokenizer-base", tmp_path / "base"
    assert main(["train-tokenizer", "--stage", "base", "--run", str(tok), "--no-progress", *small]) == 0
    assert main(["train-base", "--run", str(base), "--no-progress", *small]) == 0
    assert sharded_steps(base / "checkpoints" / "sharded") == [4]  # Orbax on a mesh
    assert sharded_steps(tok / "checkpoints" / "sharded") == [4]  # the tokenizer: data-parallel
    assert stage_complete(base) and stage_complete(tok)
    # Sampling from the command line with the batch split over the mesh: the images one device gives.
    from PIL import Image

    for out, extra in (("one", []), ("mesh", ["--mesh", "data=8"])):
        assert main(["sample", "--run", str(tmp_path), "--prompt", "a red circle", "--prompt", "a blue square",
                     "--stage", "base", "--out", str(tmp_path / out), *extra]) == 0
    for name in ("0000_0.png", "0001_0.png"):
        one, many = (np.asarray(Image.open(tmp_path / d / name), int) for d in ("one", "mesh"))
        assert np.abs(one - many).max() <= 1
    # A mesh that does not fit the job, and a batch that does not split, are one-line errors.
    assert main(["train-base", "--run", str(tmp_path / "x"), "--no-progress", *small, "mesh.data=3"]) == 2
    assert "mesh: data×fsdp×tensor = 3×2×2 = 12 devices, but this job has 8" in capsys.readouterr().err
    assert main(["train-base", "--run", str(tmp_path / "y"), "--no-progress", *small, "base_train.batch_size=6"]) == 2
    assert "base_train.batch_size: the batch of 6 does not split over mesh.data × mesh.fsdp = 4" in capsys.readouterr().err


def test_offline_ema_reads_the_sharded_checkpoints(reference, tmp_path):
    """`muse-mini ema` on a run trained on a mesh averages its Orbax steps (§3)."""
    from muse_mini.cli import main
    from muse_mini.runs.ema import ema_average
    from muse_mini.runs.load import load_base
    from muse_mini.runs.sharded import ShardedCheckpoints

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    steps = sharded_steps(run_dir / "checkpoints" / "sharded")
    assert len(steps) >= 2
    assert main(["ema", "--run", str(run_dir), "--decay", "0.7"]) == 0
    ema, _ = load_base(run_dir, ema=True)
    # Reference: whole training states restored through the trainer's own path, then averaged.
    cfg = toy_config(STEPS)
    opt = make_optimizer(cfg.base_train)
    like = eqx.filter_eval_shape(lambda k: init_train_state(build_base(cfg, k), opt), init_key(0))
    store = ShardedCheckpoints(run_dir / "checkpoints" / "sharded", keep=0)
    target = Placement(like, make_mesh(MeshConfig())).target()
    models = [store.restore(s, target)[0].model for s in steps]
    store.close()
    expected = ema_average(models, 0.7)
    for a, b in zip(_leaves(expected), _leaves(ema), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
