"""Offline checkpoint EMA (Muse §3): the average, the checkpoint selection, and `muse-mini ema` end to end."""

import gc
import json
import weakref

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mini.cli import main
from muse_mini.runs.checkpoint import list_checkpoints, load_checkpoint, read_header
from muse_mini.runs.ema import EMA_FILE, ema_average, select_checkpoints, write_ema


def closed_form(xs, decay):
    """The EMA written out: x_1 weighs d^(n-1), x_k (k >= 2) weighs (1-d) d^(n-k); in float64."""
    n = len(xs)
    weights = [decay ** (n - 1)] + [(1 - decay) * decay ** (n - k) for k in range(2, n + 1)]
    assert np.isclose(sum(weights), 1.0)
    return sum(w * np.asarray(x, np.float64) for w, x in zip(weights, xs))


def _trees(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "count": jnp.int32(10 * k),
             "nested": (jnp.asarray(rng.normal(size=5), jnp.float32),)} for k in range(n)]


@pytest.mark.parametrize("decay", [0.1, 0.5, 0.7, 0.99])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_ema_average_matches_the_closed_form(decay, n):
    trees = _trees(n)
    avg = ema_average(iter(trees), decay)
    np.testing.assert_allclose(avg["w"], closed_form([t["w"] for t in trees], decay), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(avg["nested"][0], closed_form([t["nested"][0] for t in trees], decay),
                               rtol=1e-5, atol=1e-6)
    assert avg["w"].dtype == jnp.float32
    assert avg["count"].dtype == jnp.int32 and int(avg["count"]) == 10 * (n - 1)  # the newest tree's


def test_the_newest_checkpoint_weighs_one_minus_decay():
    zeros, one = {"w": np.zeros(2, np.float32)}, {"w": np.ones(2, np.float32)}
    np.testing.assert_allclose(ema_average([zeros, zeros, one], 0.7)["w"], 0.3, rtol=1e-6)


def test_bfloat16_leaves_are_accumulated_in_float32_and_cast_back():
    trees = [{"w": jnp.full(4, x, jnp.bfloat16)} for x in (1.0, 1.0 + 2 ** -7, 1.0 + 2 ** -6)]
    avg = ema_average(trees, 0.5)
    assert avg["w"].dtype == jnp.bfloat16
    expected = closed_form([np.asarray(t["w"], np.float32) for t in trees], 0.5)
    np.testing.assert_allclose(np.asarray(avg["w"], np.float32), expected, rtol=2 ** -7)


def test_ema_average_streams_one_tree_at_a_time():
    alive = []

    def trees():
        for k in range(4):
            # When tree k is made, every earlier one must be gone: only the average is kept.
            gc.collect()
            assert [ref() is None for ref in alive] == [True] * len(alive), k
            leaf = np.full(3, float(k), np.float32)
            alive.append(weakref.ref(leaf))
            yield {"w": leaf}
            del leaf  # this generator's own reference

    np.testing.assert_allclose(ema_average(trees(), 0.5)["w"], closed_form([0, 1, 2, 3], 0.5), rtol=1e-6)


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, float("nan"), True])
def test_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="--decay"):
        ema_average(_trees(2), decay)


def test_ema_average_refuses_nothing_and_mismatched_trees():
    with pytest.raises(ValueError, match="no trees"):
        ema_average([], 0.7)
    with pytest.raises(ValueError, match="structure"):
        ema_average([{"a": np.zeros(1)}, {"b": np.zeros(1)}], 0.7)


def test_select_checkpoints():
    assert select_checkpoints([10, 5, 15], None) == [5, 10, 15]
    assert select_checkpoints([2500, 5000, 7500, 10000, 10500], 5000) == [5000, 10000]
    assert select_checkpoints([4, 8], 1) == [4, 8]
    with pytest.raises(ValueError, match="--every 3000"):
        select_checkpoints([1000, 2000, 4000], 3000)
    for bad in (0, -5, True, 2.5):
        with pytest.raises(ValueError, match="--every"):
            select_checkpoints([5000], bad)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A real (tiny) base run with checkpoints at steps 2, 4 and 6.

    The update only adds noise to the weights: the EMA cares about distinct
    checkpoints, not about learning, and this needs no tokenizer or data.
    """
    from muse_mini.config import MuseConfig, get_preset
    from muse_mini.models.build import build_base
    from muse_mini.training.base import stage_metadata
    from muse_mini.training.loop import train
    from muse_mini.training.rundir import RunSpec
    from muse_mini.training.losses import TrainState

    cfg = get_preset("toy", overrides=[
        "base.depth=1", "base.width=16", "base.mlp_dim=32", "base.num_heads=2", "base.remat=false",
        "base_train.steps=6", "base_train.checkpoint_every=2", "base_train.keep_checkpoints=5",
        "base_train.warmup_steps=1", "base_train.batch_size=1"])
    run = tmp_path_factory.mktemp("ema") / "base"

    def step_fn(state, batch, key):
        params, static = eqx.partition(state.model, eqx.is_inexact_array)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(key, len(leaves))
        noisy = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
        model = eqx.combine(jax.tree.unflatten(treedef, noisy), static)
        return TrainState(model, state.opt_state), {"loss": jnp.float32(0.0)}

    spec = RunSpec(run, cfg.base_train, stage_metadata(run, cfg, "base", tokenizer_run=run.parent / "tokenizer-base"),
                   defaults={"config": MuseConfig().to_dict()}, model_of=lambda s: s.model)
    train(spec, state=TrainState(build_base(cfg, jax.random.key(0)), None), step_fn=step_fn,
          batch_fn=lambda step: np.int32(step), progress=False)
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2, 4, 6]
    return run


def _checkpoint_models(run, like):
    return [load_checkpoint(p, like, prefix=".model")[0] for _, p in list_checkpoints(run / "checkpoints")]


def test_cli_ema_writes_the_average_that_load_base_reads(base_run, capsys):
    from muse_mini.runs.load import load_base

    final, _ = load_base(base_run)
    assert main(["ema", "--run", str(base_run), "--decay", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "steps 2, 4, 6" in out and EMA_FILE in out, out
    ema, _ = load_base(base_run, ema=True)
    ckpts = _checkpoint_models(base_run, final)
    for got, *xs in zip(jax.tree.leaves(ema), *map(jax.tree.leaves, ckpts)):
        assert got.dtype == xs[-1].dtype
        if eqx.is_inexact_array(got):
            np.testing.assert_allclose(got, closed_form(xs, 0.5), rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(got, xs[-1])
    assert not np.allclose(jax.tree.leaves(ema)[0], jax.tree.leaves(final)[0])  # really averaged
    meta = read_header(base_run / EMA_FILE)["metadata"]
    assert meta["ema"] == {"decay": 0.5, "every": None, "steps": [2, 4, 6]}
    assert meta["metadata"]["stage"] == "base" and "train_config" in meta


def test_every_keeps_only_the_multiples(base_run):
    from muse_mini.runs.load import load_base

    final, _ = load_base(base_run)
    path = write_ema(base_run, decay=0.7, every=4, like_model=final)
    assert read_header(path)["metadata"]["ema"]["steps"] == [4]
    ema, _ = load_base(base_run, ema=True)
    step4 = _checkpoint_models(base_run, final)[1]
    for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(step4)):
        np.testing.assert_array_equal(a, b)


def _fails(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_cli_errors(base_run, tmp_path, capsys):
    _fails(capsys, ["ema", "--run", str(base_run), "--decay", "1.5"], "--decay")
    _fails(capsys, ["ema", "--run", str(base_run), "--every", "0"], "--every")
    _fails(capsys, ["ema", "--run", str(base_run), "--every", "5"], "--every 5")
    _fails(capsys, ["ema", "--run", str(tmp_path / "missing")], str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    _fails(capsys, ["ema", "--run", str(empty)], "no checkpoints", str(empty))


def test_tokenizer_runs_are_refused(tmp_path, capsys):
    run = tmp_path / "tokenizer-base"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt_00000002.eqx").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"train_config": {}, "metadata": {"stage": "base", "tokenizer": {}}}))
    _fails(capsys, ["ema", "--run", str(run)], "tokenizer", "base or super-res")


def test_load_base_without_an_ema_file_says_how_to_make_one(base_run, tmp_path):
    import shutil

    from muse_mini.runs.load import load_base

    copy = tmp_path / "base"
    shutil.copytree(base_run, copy, ignore=shutil.ignore_patterns(EMA_FILE, "checkpoints"))
    with pytest.raises(FileNotFoundError, match="muse-mini ema --run"):
        load_base(copy, ema=True)
    load_base(copy)  # the default still reads model.eqx
