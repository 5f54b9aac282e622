"""Checkpoint format: round trip, atomicity, and clear errors for every kind of damage."""

import json
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from muse_mini.runs.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    read_header,
    save_checkpoint,
)


@eqx.filter_jit  # one compilation instead of many eager ops: keeps the tests fast
def _make_arrays(width):
    model = eqx.nn.MLP(3, 2, width, 2, key=jax.random.PRNGKey(0))
    opt = optax.adam(1e-3)
    params = eqx.filter(model, eqx.is_inexact_array)
    opt_state = opt.init(params)
    # One real update so the Adam moments and count are non-trivial.
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = opt.update(grads, opt_state, params)
    return model, opt_state


def make_tree(width=8):
    model, opt_state = _make_arrays(width)
    return {
        "model": model,
        "opt_state": opt_state,
        "raw_key": jax.random.PRNGKey(7),
        "typed_key": jax.random.key(3),
        "np_array": np.arange(5, dtype=np.float32),
        "scalar": 0.25,
    }


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        if eqx.is_array_like(x):
            assert np.array_equal(np.asarray(x), np.asarray(y)), (x, y)
            assert np.asarray(x).dtype == np.asarray(y).dtype


def test_round_trip_with_optax_state_and_keys(tmp_path):
    tree = make_tree()
    path = save_checkpoint(tmp_path / "c.eqx", tree, metadata={"note": "hi"}, step=12)
    like = eqx.filter_eval_shape(make_tree)
    loaded, meta = load_checkpoint(path, like)
    leaves_equal(tree, loaded)
    assert meta == {"note": "hi", "step": 12}
    # The typed key still works as a key after the round trip.
    assert np.array_equal(
        jax.random.normal(loaded["typed_key"], (3,)), jax.random.normal(tree["typed_key"], (3,))
    )
    # Loading into a concrete pytree works as well.
    leaves_equal(tree, load_checkpoint(path, make_tree())[0])


def test_header_is_one_readable_json_line(tmp_path):
    path = save_checkpoint(tmp_path / "c.eqx", make_tree(), metadata={"a": "x\ny"}, step=3)
    first = path.read_bytes().split(b"\n", 1)[0]
    header = json.loads(first)
    assert header["format"] == "muse_mini.checkpoint" and header["step"] == 3
    assert header["metadata"] == {"a": "x\ny"}
    weight = {"path": "['model'].layers[0].weight", "shape": [8, 3], "dtype": "float32"}
    assert weight in header["leaves"]
    assert read_header(path)["payload_sha256"] == header["payload_sha256"]


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    tree = make_tree()
    good = save_checkpoint(checkpoint_path(tmp_path, 1), tree, metadata={}, step=1)

    def crash(*args, **kwargs):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(checkpoint_path(tmp_path, 2), tree, metadata={}, step=2)
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]  # no stray temp file
    assert latest_checkpoint(tmp_path) == good
    leaves_equal(tree, load_checkpoint(good, make_tree())[0])


def test_half_written_temp_file_is_never_picked_up(tmp_path):
    good = save_checkpoint(checkpoint_path(tmp_path, 5), make_tree(), metadata={}, step=5)
    # What a writer killed mid-write leaves behind: a partial hidden temporary.
    data = checkpoint_path(tmp_path, 5).read_bytes()
    (tmp_path / ".ckpt_00000010.eqx.abc123.tmp").write_bytes(data[: len(data) // 2])
    assert latest_checkpoint(tmp_path) == good
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5]


def test_truncated_file_is_reported(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt_00000001.eqx", make_tree(), metadata={}, step=1)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="truncated") as e:
        load_checkpoint(path, make_tree())
    assert str(path) in str(e.value)
    # Cut inside the header line too.
    path.write_bytes(data[:50])
    with pytest.raises(CheckpointError, match="truncated") as e:
        load_checkpoint(path, make_tree())
    assert str(path) in str(e.value)


def test_flipped_byte_is_a_hash_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / "c.eqx", make_tree(), metadata={}, step=1)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="hash mismatch") as e:
        load_checkpoint(path, make_tree())
    assert str(path) in str(e.value)


def test_trailing_garbage_is_corrupt(tmp_path):
    path = save_checkpoint(tmp_path / "c.eqx", make_tree(), metadata={}, step=1)
    path.write_bytes(path.read_bytes() + b"xx")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path, make_tree())


def test_wrong_format(tmp_path):
    path = tmp_path / "c.eqx"
    eqx.tree_serialise_leaves(path, make_tree()["model"])  # a plain Equinox file
    with pytest.raises(CheckpointError, match="not a muse_mini.checkpoint file") as e:
        load_checkpoint(path, make_tree())
    assert str(path) in str(e.value)
    with pytest.raises(CheckpointError, match="cannot open"):
        load_checkpoint(tmp_path / "missing.eqx", make_tree())


def test_shape_mismatch_names_the_leaf(tmp_path):
    path = save_checkpoint(tmp_path / "c.eqx", make_tree(width=8), metadata={}, step=1)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, eqx.filter_eval_shape(make_tree, 16))
    msg = str(e.value)
    assert str(path) in msg and "['model'].layers[0].weight" in msg
    assert "(8, 3)" in msg and "(16, 3)" in msg


def test_structure_mismatch_names_missing_leaves(tmp_path):
    tree = make_tree()
    path = save_checkpoint(tmp_path / "c.eqx", tree, metadata={}, step=1)
    like = {**tree, "extra": jnp.zeros(2)}
    with pytest.raises(CheckpointError, match=r"missing from file \[\"\['extra'\]\"\]"):
        load_checkpoint(path, like)


def test_dtype_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / "c.eqx", {"w": jnp.zeros(3)}, metadata={}, step=1)
    with pytest.raises(CheckpointError, match=r"\['w'\].*float32.*bfloat16"):
        load_checkpoint(path, {"w": jnp.zeros(3, jnp.bfloat16)})


def test_prune_keeps_newest(tmp_path):
    for s in (1, 2, 3, 10):
        save_checkpoint(checkpoint_path(tmp_path, s), {"w": jnp.zeros(2)}, metadata={}, step=s)
    prune_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 10]
    assert latest_checkpoint(tmp_path).name == "ckpt_00000010.eqx"
    prune_checkpoints(tmp_path, keep=0)  # 0 = keep everything
    assert len(list_checkpoints(tmp_path)) == 2
    assert latest_checkpoint(tmp_path / "nope") is None
