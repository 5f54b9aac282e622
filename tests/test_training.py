"""The shared trainer: schedules, optimisers, exact resume under SIGKILL, NaN guard."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mini.runs.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from muse_mini.config import TrainConfig
from muse_mini.training.hooks import NonFiniteLossError
from muse_mini.training.keys import epoch_batch_indices, init_key, step_key
from muse_mini.training.loop import train
from muse_mini.training.optim import make_optimizer, make_schedule
from muse_mini.training.rundir import ConfigMismatchError, RunLock, RunSpec, load_final
from muse_mini.viz.figures import plot_metrics
from muse_mini.runs.layout import read_metrics, relative_run_path, stage_complete

sys.path.insert(0, str(Path(__file__).parent))
from _train_toy import kill_after_first_checkpoint, make_toy, run, toy_cfg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOY = Path(__file__).parent / "_train_toy.py"


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def assert_bit_identical(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and np.array_equal(x, y)


# --------------------------------------------------------------------------- schedule & optimisers


def test_schedule_matches_hand_formula():
    lr, W, T, end = 2e-3, 10, 50, 0.1
    sched = make_schedule(lr, W, T, end_fraction=end)

    def hand(t):
        if t < W:
            return lr * t / W
        p = min(t - W, T - W) / (T - W)
        return lr * end + (lr - lr * end) * 0.5 * (1 + math.cos(math.pi * p))

    for t in [0, 1, 5, 9, 10, 11, 30, 49, 50, 80]:
        assert float(sched(t)) == pytest.approx(hand(t), rel=1e-5, abs=1e-12), t
    assert float(sched(W)) == pytest.approx(lr)
    assert float(sched(T)) == pytest.approx(lr * end)
    # Degenerate: all warmup, no cosine phase.
    assert float(make_schedule(1.0, 5, 5)(5)) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["adam", "adamw", "adafactor"])
def test_optimizers_construct_and_reduce_loss(name):
    cfg = TrainConfig(
        steps=100, optimizer=name, lr=3e-2, b1=0.9, b2=0.99, weight_decay=1e-4,
        warmup_steps=2, clip_norm=1.0,
    )
    opt = make_optimizer(cfg)
    w = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    x = jnp.linspace(-1, 1, 8 * 4).reshape(8, 4)
    loss = lambda p: jnp.mean((x @ p["w"] + p["b"]) ** 2)  # noqa: E731

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return jax.tree.map(jnp.add, p, u), s

    state = opt.init(w)
    p = w
    for _ in range(20):
        p, state = step(p, state)
    assert float(loss(p)) < 0.5 * float(loss(w))


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_decoupled_weight_decay_is_lr_scaled_and_masked(name):
    # With zero gradients only the decay acts: Δθ = -lr_t * wd * θ on ≥2-D leaves.
    cfg = TrainConfig(steps=10, optimizer=name, lr=0.5, weight_decay=0.1, warmup_steps=1)
    opt = make_optimizer(cfg)
    p = {"w": jnp.full((2, 3), 2.0), "b": jnp.full((3,), 2.0)}
    s = opt.init(p)
    zeros = jax.tree.map(jnp.zeros_like, p)
    update = jax.jit(opt.update)
    u, s = update(zeros, s, p)  # step 0: lr_0 = 0 (warmup)
    u, s = update(zeros, s, p)  # step 1: lr_1 = 0.5
    lr1 = float(make_schedule(0.5, 1, 10)(1))
    np.testing.assert_allclose(u["w"], -lr1 * 0.1 * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(u["b"], 0.0)  # vectors are not decayed


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        make_optimizer(TrainConfig(optimizer="sgd"))


def test_epoch_batch_indices_are_permutations():
    n, bs, seed = 10, 3, 5
    per_epoch = n // bs
    for epoch in range(2):
        batch = np.concatenate(
            [epoch_batch_indices(n, bs, seed, epoch * per_epoch + i) for i in range(per_epoch)]
        )
        assert len(set(batch.tolist())) == per_epoch * bs
    a = epoch_batch_indices(n, bs, seed, 0)
    assert np.array_equal(a, epoch_batch_indices(n, bs, seed, 0))
    assert not np.array_equal(
        np.concatenate([epoch_batch_indices(n, bs, seed, i) for i in range(3)]),
        np.concatenate([epoch_batch_indices(n, bs, seed, i) for i in range(3, 6)]),
    )
    with pytest.raises(ValueError):
        epoch_batch_indices(2, 3, 0, 0)


def test_step_keys_are_distinct_per_step_and_seed_and_reproducible():
    draws = {(seed, s): np.asarray(jax.random.normal(step_key(seed, s), (4,)))
             for seed in (0, 1) for s in range(6)}
    flat = [tuple(v.tolist()) for v in draws.values()]
    assert len(set(flat)) == len(flat)  # every (seed, step) draws differently
    # A "resumed" process that asks for step 4 alone draws what the full run drew.
    assert np.array_equal(np.asarray(jax.random.normal(step_key(1, 4), (4,))), draws[(1, 4)])
    assert not np.array_equal(step_key(0, 0), init_key(0))  # init is independent of every step


# --------------------------------------------------------------------------- the trainer


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 12-step toy run (trained once per module); tests copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("finished")
    cfg = toy_cfg(steps=12)
    state, step_fn, batch_fn = make_toy(cfg)
    traces = []

    def counting_step(state, batch, key):
        traces.append(1)  # Python side effect: runs once per trace
        return step_fn(state, batch, key)

    final = train(RunSpec(run_dir, cfg, {"stage": "toy", "data": {"n": 40}}), state=state, step_fn=counting_step,
                  batch_fn=batch_fn, progress=False)
    return run_dir, state, final, len(traces)


def copy_run(src, dst):
    shutil.copytree(src, dst)
    (dst / ".lock").unlink()
    return dst


def test_full_run_then_finished_run_returns_immediately(finished_run):
    run_dir, state, final, n_traces = finished_run
    assert n_traces == 1  # the step was jitted exactly once
    assert stage_complete(run_dir)
    assert json.loads((run_dir / "DONE.json").read_text())["step"] == 12
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [8, 12]  # keep=2
    assert_bit_identical(final, load_final(run_dir, state))
    m = read_metrics(run_dir)
    assert m["step"].tolist() == list(range(12)) and np.isfinite(m["loss"]).all()
    leaves(state)  # the caller's initial state was not donated away

    # Called again: no step runs, the stored final state comes back.
    cfg = toy_cfg(steps=12)
    _, step_fn, batch_fn = make_toy(cfg)
    again = train(RunSpec(run_dir, cfg, {"stage": "toy", "data": {"n": 40}}), state=state, step_fn=step_fn,
                  batch_fn=lambda s: pytest.fail("a finished run must not train"), progress=False)
    assert_bit_identical(final, again)

    import matplotlib

    matplotlib.use("Agg")
    ax = plot_metrics(run_dir, log=True, smooth=3)
    assert ax.get_yscale() == "log"


def test_model_of_writes_model_alone_and_a_run_without_it_says_how_to_convert(tmp_path):
    """model.eqx holds only the model's leaves; a run without it (from before model.eqx) is
    refused in one line that says how to retrain or convert it, and the conversion works."""
    from muse_mini.runs.checkpoint import read_header
    from muse_mini.runs.weights import load_model

    cfg = toy_cfg(steps=4)
    state, step_fn, batch_fn = make_toy(cfg)
    spec = RunSpec(tmp_path, cfg, {"stage": "toy"}, model_of=lambda s: s.model)
    final = train(spec, state=state, step_fn=step_fn, batch_fn=batch_fn, progress=False)
    paths = [leaf["path"] for leaf in read_header(tmp_path / "model.eqx")["leaves"]]
    assert paths and all(not p.startswith(".opt_state") for p in paths)
    assert paths == [jax.tree_util.keystr(p) for p, _ in
                     jax.tree_util.tree_flatten_with_path(eqx.filter(final.model, eqx.is_array))[0]]
    like = eqx.filter_eval_shape(lambda: final.model)
    assert_bit_identical(load_model(tmp_path, like), final.model)
    (tmp_path / "model.eqx").unlink()
    with pytest.raises(FileNotFoundError, match=r"no model\.eqx .*retrain it, or delete its DONE\.json") as e:
        load_model(tmp_path, like)
    assert "\n" not in str(e.value)
    (tmp_path / "DONE.json").unlink()  # the conversion the message gives
    state, step_fn, batch_fn = make_toy(cfg)
    train(spec, state=state, step_fn=step_fn, batch_fn=batch_fn, progress=False)
    assert_bit_identical(load_model(tmp_path, like), final.model)


def test_finite_guard_names_the_bad_step_and_a_missing_metric():
    from muse_mini.training.hooks import FiniteGuard

    guard = FiniteGuard(["loss"], describe=lambda s: f"(context {s})")
    guard.on_checked(0, {"loss": jnp.float32(1.0)})  # finite: nothing happens
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss=nan at step 1 \(context 1\)") as e:
        guard.on_checked(1, {"loss": jnp.float32(jnp.nan)})
    assert e.value.step == 1 and math.isnan(e.value.values["loss"])
    with pytest.raises(KeyError, match="lack \\['loss'\\]"):
        guard.on_checked(2, {"accuracy": 1.0})


def test_hooks_see_every_update_in_order_and_close_on_failure(tmp_path):
    from muse_mini.training.hooks import TrainerHooks

    class Recorder(TrainerHooks):
        def __init__(self):
            self.events = []

        def on_start(self, step):
            self.events.append(("start", step))

        def on_checked(self, step, metrics):
            self.events.append(("checked", step))

        def on_checkpoint(self, step, state):
            self.events.append(("checkpoint", step))

        def close(self):
            self.events.append(("close",))

    cfg = toy_cfg(steps=4, checkpoint_every=2)
    state, step_fn, batch_fn = make_toy(cfg)
    rec = Recorder()
    train(RunSpec(tmp_path / "ok", cfg, {}), state=state, step_fn=step_fn, batch_fn=batch_fn, progress=False,
          hooks=[rec])
    assert rec.events == [("start", 0), ("checked", 0), ("checked", 1), ("checkpoint", 2),
                          ("checked", 2), ("checked", 3), ("checkpoint", 4), ("close",)]
    state, step_fn, batch_fn = make_toy(cfg, nan_at=1)
    rec = Recorder()
    with pytest.raises(NonFiniteLossError):
        train(RunSpec(tmp_path / "nan", cfg, {}), state=state, step_fn=step_fn, batch_fn=batch_fn, progress=False,
              hooks=[rec])
    assert rec.events == [("start", 0), ("checked", 0), ("close",)]


def test_config_mismatch_on_resume(finished_run, tmp_path):
    run_dir = copy_run(finished_run[0], tmp_path / "run")
    with pytest.raises(ConfigMismatchError, match=r"train_config\.lr: 0\.01 -> 0\.02"):
        run(run_dir, toy_cfg(steps=12, lr=0.02))
    cfg = toy_cfg(steps=12)
    state, step_fn, batch_fn = make_toy(cfg)
    with pytest.raises(ConfigMismatchError, match=r"metadata\.stage: 'toy' -> 'other'"):
        train(RunSpec(run_dir, cfg, {"stage": "other", "data": {"n": 40}}), state=state, step_fn=step_fn,
              batch_fn=batch_fn, progress=False)
    # Only `steps` (and bookkeeping fields) may change: this extends the finished run.
    run(run_dir, toy_cfg(steps=14, log_every=2))
    assert json.loads((run_dir / "DONE.json").read_text())["step"] == 14
    assert json.loads((run_dir / "config.json").read_text())["train_config"]["steps"] == 14
    assert read_metrics(run_dir)["step"].tolist() == list(range(12)) + [12, 13]


def _reload(run_dir, metadata, **spec):
    """Reload ``finished_run`` from ``run_dir`` with this metadata, failing if it would train."""
    cfg = toy_cfg(steps=12)
    state, step_fn, _ = make_toy(cfg)
    return train(RunSpec(run_dir, cfg, metadata, **spec), state=state, step_fn=step_fn, progress=False,
                 batch_fn=lambda s: pytest.fail("a finished run must not train"))


def test_config_ignore_lets_unrelated_sections_change(finished_run, tmp_path):
    """A stage's run stores the whole config, but another stage's settings must not void it."""
    run_dir = copy_run(finished_run[0], tmp_path / "run")
    changed = {"stage": "toy", "data": {"n": 40}, "sampler": {"guidance": 2.0}}
    with pytest.raises(ConfigMismatchError, match=r"metadata\.sampler\.guidance: '<missing>' -> 2\.0"):
        _reload(run_dir, changed)
    assert_bit_identical(finished_run[2], _reload(run_dir, changed, ignore=["sampler"]))
    assert json.loads((run_dir / "config.json").read_text())["metadata"]["sampler"] == {"guidance": 2.0}
    # Not a prefix match on names: "data" is still checked when "dat" is ignored.
    with pytest.raises(ConfigMismatchError, match=r"metadata\.data\.n: 40 -> 41"):
        _reload(run_dir, {**changed, "data": {"n": 41}}, ignore=["sampler", "dat"])


def test_a_field_added_later_counts_as_its_default(finished_run, tmp_path):
    """Runs written before a config field existed stay valid while the field keeps its default."""
    run_dir = copy_run(finished_run[0], tmp_path / "run")
    stored = json.loads((run_dir / "config.json").read_text())["metadata"]
    newer = {**stored, "data": {**stored.get("data", {}), "margin": 0}}
    defaults = {"data": {"margin": 0}}
    assert_bit_identical(finished_run[2], _reload(run_dir, newer, defaults=defaults))
    changed = {**stored, "data": {**stored.get("data", {}), "margin": 2}}
    with pytest.raises(ConfigMismatchError, match=r"metadata\.data\.margin: 0 -> 2"):
        _reload(copy_run(finished_run[0], tmp_path / "other"), changed, defaults=defaults)


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    cfg = toy_cfg(steps=20)  # checkpoints every 4 steps
    k = 10
    with pytest.raises(NonFiniteLossError, match=rf"loss=nan at step {k}\b") as e:
        run(tmp_path, cfg, nan_at=k)
    assert e.value.step == k
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert ckpts[-1][0] == 8  # nothing saved from the NaN state
    state, _, _ = make_toy(cfg)
    loaded, meta = load_checkpoint(ckpts[-1][1], state)
    assert meta["step"] == 8 and all(np.isfinite(x).all() for x in leaves(loaded))
    assert not stage_complete(tmp_path)
    assert read_metrics(tmp_path)["step"].max() < k
    # It cannot silently continue: resuming replays deterministically into the same NaN.
    with pytest.raises(NonFiniteLossError, match=rf"at step {k}\b"):
        run(tmp_path, cfg, nan_at=k)
    assert read_metrics(tmp_path)["step"].tolist() == list(range(k))


def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    # Update 3 writes NaN into the weights while its loss (computed before the update)
    # is finite; the checkpoint at step 4 must refuse to save that state.
    cfg = toy_cfg(steps=12)
    with pytest.raises(NonFiniteLossError, match=r"non-finite values in leaf .*model\.layers"):
        run(tmp_path, cfg, poison_at=3)
    assert list_checkpoints(tmp_path / "checkpoints") == []


def test_corrupt_latest_checkpoint_is_an_error_naming_it(finished_run, tmp_path):
    run_dir = copy_run(finished_run[0], tmp_path / "run")
    (run_dir / "DONE.json").unlink()
    latest = list_checkpoints(run_dir / "checkpoints")[-1][1]
    data = bytearray(latest.read_bytes())
    data[-5] ^= 0xFF
    latest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="hash mismatch") as e:
        run(run_dir, toy_cfg(steps=12))
    assert str(latest) in str(e.value) and "delete" in str(e.value)


def test_invalid_config_and_metadata_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"log_every.*got 0"):  # refused when the config is built
        run(tmp_path, toy_cfg(log_every=0))
    cfg = toy_cfg(steps=4)
    state, step_fn, batch_fn = make_toy(cfg)
    with pytest.raises(TypeError, match="JSON"):
        train(RunSpec(tmp_path, cfg, {"x": float("nan")}), state=state, step_fn=step_fn, batch_fn=batch_fn,
              progress=False)
    assert not (tmp_path / "config.json").exists()


def test_concurrent_training_in_one_run_dir_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RuntimeError, match="already being trained"):
            run(tmp_path, toy_cfg(steps=4))


# --------------------------------------------------------------------------- SIGKILL resume


def _toy_cmd(run_dir, *extra):
    return [sys.executable, str(TOY), str(run_dir), "--steps", "40", *extra]


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "JAX_PLATFORMS": "cpu",
        # Share compiled programs between the three processes (saves CPU time).
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(_toy_cmd(ref_dir), env=env, check=True, timeout=300, capture_output=True)

    # Sleep 0.2 s per step so the kill surely lands mid-run, after the first checkpoint.
    ckpt_dir = run_dir / "checkpoints"
    kill_after_first_checkpoint(_toy_cmd(run_dir, "--sleep", "0.2"), env, lambda: list_checkpoints(ckpt_dir),
                                timeout=240)
    assert not stage_complete(run_dir), "the kill came too late to interrupt the run"
    killed_at = list_checkpoints(ckpt_dir)[-1][0]
    assert 0 < killed_at < 40

    resumed = subprocess.run(
        _toy_cmd(run_dir), env=env, timeout=300, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from ckpt_" in resumed.stderr

    like, _, _ = make_toy(toy_cfg(steps=40))
    assert_bit_identical(load_final(ref_dir, like), load_final(run_dir, like))
    m_ref, m_run = read_metrics(ref_dir), read_metrics(run_dir)
    assert m_run["step"].tolist() == list(range(40))  # every step exactly once
    assert np.array_equal(m_ref["loss"], m_run["loss"])


def test_relative_run_path_keeps_symlinked_inputs(tmp_path):
    # A copied pipeline links its tokenizer to the original: the recorded path
    # must be the link's, or the copy's config would not match on resume.
    (tmp_path / "orig" / "tokenizer-base").mkdir(parents=True)
    (tmp_path / "copy" / "base").mkdir(parents=True)
    (tmp_path / "copy" / "tokenizer-base").symlink_to(tmp_path / "orig" / "tokenizer-base")
    assert relative_run_path(tmp_path / "copy" / "tokenizer-base", tmp_path / "copy" / "base") == os.path.join(
        "..", "tokenizer-base")
    assert relative_run_path("runs/demo/tokenizer-base", "runs/demo/base") == os.path.join("..", "tokenizer-base")


def test_a_finished_run_whose_final_state_is_gone_says_so(finished_run, tmp_path):
    """DONE.json with model.eqx but neither final.eqx nor the last checkpoint: a clear error,
    not an older checkpoint passed off as the final state."""
    src, _, _, _ = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    cfg = toy_cfg(steps=12)
    state, step_fn, batch_fn = make_toy(cfg)
    (run_dir / "final.eqx").unlink()
    (run_dir / "checkpoints" / "ckpt_00000012.eqx").unlink()
    (run_dir / "model.eqx").write_bytes(b"stand-in: the weights alone")
    with pytest.raises(FileNotFoundError, match="finished 12 steps, but its final training state is gone"):
        train(RunSpec(run_dir, cfg, {"stage": "toy", "data": {"n": 40}}), state=state, step_fn=step_fn,
              batch_fn=batch_fn, progress=False)
    assert (run_dir / "DONE.json").is_file()  # nothing was cleared
