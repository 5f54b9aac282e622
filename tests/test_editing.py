"""Inpainting, outpainting and mask-free editing (Muse §3.3) at the token level, with fake logits."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mini.decoding.editing import mask_free_edit, pixel_mask_to_token_mask
from muse_mini.decoding.sampler import decode
from muse_mini.decoding.spec import DecodeSpec

V, GRID, B = 8, 8, 2
N = GRID * GRID
W_NxV = jnp.asarray(np.random.default_rng(0).normal(size=(N, V)), jnp.float32)
TOKENS = jnp.asarray(np.random.default_rng(1).integers(0, V, (B, N)), jnp.int32)


def key(seed):
    return jax.random.key(seed, impl="rbg")  # fast to compile on CPU; any key type works


def table_logits(tokens_BxN, step):
    return jnp.broadcast_to(W_NxV, tokens_BxN.shape + (V,))


def test_inpainting_keeps_the_unmasked_region_exactly():
    region = jnp.zeros((B, GRID, GRID), bool).at[:, 2:5, 3:7].set(True).reshape(B, N)
    traj = eqx.filter_jit(decode)(table_logits, TOKENS, region, key=key(0), spec=DecodeSpec(steps=4, mask_id=V))
    keep = ~np.asarray(region)
    for t in range(4):
        np.testing.assert_array_equal(np.asarray(traj.tokens_BxTxN[:, t])[keep], np.asarray(TOKENS)[keep])
    assert (traj.tokens_BxN < V).all() and (np.asarray(traj.tokens_BxN)[~keep] != np.asarray(TOKENS)[~keep]).any()
    np.testing.assert_array_equal(traj.initial_mask_BxN, region)


def test_outpainting_inside_the_frame_is_inpainting_the_complement():
    keep = jnp.zeros((B, N), bool).at[:, :10].set(True)
    traj = eqx.filter_jit(decode)(table_logits, TOKENS, ~keep, key=key(3), spec=DecodeSpec(steps=4, mask_id=V))
    np.testing.assert_array_equal(traj.tokens_BxN[:, :10], TOKENS[:, :10])
    np.testing.assert_array_equal(traj.fixed_step_BxN[:, :10], -1)  # given, never decoded
    assert (traj.fixed_step_BxN[:, 10:] >= 0).all()


def test_pixel_mask_to_token_mask():
    pixels = np.zeros((32, 32), bool)
    pixels[0:5, 0:4] = True  # spills one row into the second token row
    any_N = np.asarray(pixel_mask_to_token_mask(pixels, GRID, image_size=32))
    all_N = np.asarray(pixel_mask_to_token_mask(pixels, GRID, reduce="all"))
    assert any_N.shape == (N,)
    assert set(np.flatnonzero(any_N)) == {0, GRID}
    assert set(np.flatnonzero(all_N)) == {0}
    batched = pixel_mask_to_token_mask(np.stack([pixels, ~pixels]), GRID)
    assert batched.shape == (2, N) and not bool(batched[1, 0]) and bool(batched[1, GRID])


@pytest.mark.parametrize(
    "mask, kwargs, match",
    [
        (np.zeros((30, 30), bool), {}, r"\(30, 30\) is not divisible into a 8×8 token grid"),
        (np.zeros((32, 32), bool), dict(image_size=64), r"does not match the image size 64×64"),
        (np.zeros((32,), bool), {}, r"mask: expected shape \(H, W\) or \(B, H, W\)"),
        (np.zeros((32, 32), bool), dict(reduce="mean"), r"reduce"),
    ],
)
def test_pixel_mask_errors(mask, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pixel_mask_to_token_mask(mask, GRID, **kwargs)


@pytest.fixture(scope="module")
def edit():
    run = eqx.filter_jit(mask_free_edit)
    return run(table_logits, TOKENS, key=key(0), iterations=6, mask_id=V,
               resample_fraction=0.08, top_k=3)


def test_mask_free_edit_resamples_the_fraction_and_respects_top_k(edit):
    assert edit.tokens_BxIxN.shape == (B, 6, N) == edit.resampled_BxIxN.shape
    chosen = np.asarray(edit.resampled_BxIxN)
    assert (chosen.sum(-1) == round(0.08 * N)).all()
    previous = np.concatenate([np.asarray(TOKENS)[:, None], np.asarray(edit.tokens_BxIxN)[:, :-1]], 1)
    changed = np.asarray(edit.tokens_BxIxN) != previous
    assert not (changed & ~chosen).any(), "only the chosen subset may change"
    top3_Nx3 = np.argsort(np.asarray(W_NxV), -1)[:, -3:]
    for b, i, n in zip(*np.nonzero(chosen)):
        assert edit.tokens_BxIxN[b, i, n] in top3_Nx3[n]
    np.testing.assert_array_equal(edit.tokens_BxN, edit.tokens_BxIxN[:, -1])
    assert changed.any()


def test_mask_free_edit_top_1_moves_to_the_argmax():
    run = eqx.filter_jit(mask_free_edit)
    out = run(table_logits, TOKENS, key=key(1), iterations=40, mask_id=V, resample_fraction=0.5, top_k=1)
    greedy = np.argmax(np.asarray(W_NxV), -1)
    chosen_ever = np.asarray(out.resampled_BxIxN).any(1)
    expected_BxN = np.tile(greedy, (B, 1))
    np.testing.assert_array_equal(np.asarray(out.tokens_BxN)[chosen_ever], expected_BxN[chosen_ever])


def test_mask_free_edit_is_one_loop():
    jaxpr = jax.make_jaxpr(
        lambda k: mask_free_edit(table_logits, TOKENS, key=k, iterations=5, mask_id=V)
    )(key(0)).jaxpr
    assert [e.primitive.name for e in jaxpr.eqns].count("scan") == 1
    assert not any(e.primitive.name == "while" for e in jaxpr.eqns)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(iterations=0), r"iterations: expected an integer >= 1"),
        (dict(resample_fraction=0.0), r"resample_fraction"),
        (dict(resample_fraction=1.5), r"resample_fraction: expected a value in \(0, 1\]"),
        (dict(top_k=V + 1), r"top_k"),
        (dict(temperature=-1.0), r"temperature"),
        (dict(key=0), r"key: expected one PRNG key"),
    ],
)
def test_mask_free_edit_argument_checks(kwargs, match):
    args = dict(key=key(0), iterations=2, mask_id=V)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        mask_free_edit(table_logits, TOKENS, **args)
