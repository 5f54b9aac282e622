"""The VQ codebook: lookup, straight-through gradients, losses, restarts, usage metrics."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mini.models.quantizer import (
    VectorQuantizer, code_counts, perplexity, restart_dead_codes, restart_due, usage_fraction,
)


def _normal(seed, shape, shift=0.0):
    # NumPy inputs: each new shape drawn with jax.random would compile a kernel.
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) + shift, jnp.float32)


@pytest.mark.parametrize("normalize", [False, True])
def test_nearest_code_matches_brute_force(normalize):
    q = VectorQuantizer(64, 8, normalize=normalize, key=jax.random.key(0))
    z = np.random.default_rng(0).normal(size=(5, 7, 8)).astype(np.float32)
    codes = np.asarray(q.codes())
    zz = z / np.linalg.norm(z, axis=-1, keepdims=True) if normalize else z
    want = np.argmin(((zz[..., None, :] - codes) ** 2).sum(-1), axis=-1)
    ids = q.encode(jnp.asarray(z))
    assert ids.shape == (5, 7)
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(q.embed(ids), codes[want], rtol=1e-6)


def test_normalised_codes_are_unit_vectors():
    q = VectorQuantizer(64, 8, normalize=True, key=jax.random.key(1))
    np.testing.assert_allclose(jnp.linalg.norm(q.codes(), axis=-1), 1.0, rtol=1e-5)


def test_forward_returns_codes_and_straight_through_gradient_is_identity():
    q = VectorQuantizer(64, 8, normalize=False, key=jax.random.key(0))
    z = _normal(1, (3, 8))
    z_q, aux = q(z)
    np.testing.assert_allclose(z_q, q.embed(aux.ids), atol=1e-6)
    # d(sum(w * z_q))/dz = w: the decoder's gradient passes through unchanged.
    w = _normal(2, z.shape)
    grad = jax.jit(jax.grad(lambda z: jnp.sum(w * q(z)[0])))(z)
    np.testing.assert_allclose(grad, w, rtol=1e-6)


def test_loss_values_and_which_side_they_train():
    q = VectorQuantizer(64, 8, commitment_weight=0.25, normalize=False, key=jax.random.key(0))
    z = _normal(3, (2, 8))
    _, aux = q(z)
    mse = float(jnp.mean((z - q.embed(aux.ids)) ** 2))
    np.testing.assert_allclose(aux.codebook_loss, mse, rtol=1e-6)
    np.testing.assert_allclose(aux.commitment_loss, mse, rtol=1e-6)
    np.testing.assert_allclose(q.loss(aux), 1.25 * mse, rtol=1e-6)

    @eqx.filter_jit
    def grads(q, z):
        codebook = jax.grad(lambda q, z: q(z)[1].codebook_loss, argnums=(0, 1))(q, z)
        commitment = jax.grad(lambda q, z: q(z)[1].commitment_loss, argnums=(0, 1))(q, z)
        return codebook, commitment

    # The codebook term moves only codes, the commitment term only the encoder output.
    (g_q, g_z), (h_q, h_z) = grads(q, z)
    assert float(jnp.abs(g_z).max()) == 0.0 and float(jnp.abs(g_q.codebook_KxD).max()) > 0.0
    assert float(jnp.abs(h_q.codebook_KxD).max()) == 0.0 and float(jnp.abs(h_z).max()) > 0.0


def test_dead_code_restart_replaces_only_dead_codes():
    q = VectorQuantizer(6, 8, normalize=False, key=jax.random.key(0))
    counts = jnp.array([5, 0, 2, 0, 0, 9])  # codes 1, 3 and 4 are dead
    z = _normal(1, (10, 8), shift=10.0)  # far from every code
    new, n = restart_dead_codes(q, z, counts, key=jax.random.key(2))
    assert int(n) == 3
    old, fresh = np.asarray(q.codebook_KxD), np.asarray(new.codebook_KxD)
    live = np.asarray(counts) > 0
    np.testing.assert_array_equal(fresh[live], old[live])
    # Dead codes now sit (up to tiny noise) on encoder outputs of the batch.
    dist = np.linalg.norm(fresh[~live][:, None] - np.asarray(z)[None], axis=-1).min(axis=1)
    assert dist.max() < 0.01


def test_restarts_go_to_badly_represented_vectors():
    # 95 batch rows sit exactly on the live code (zero error) and 5 far away:
    # uniform draws would restart most dead codes onto the live code's rows,
    # making synonyms; error-weighted draws put every one on a far row.
    q = VectorQuantizer(8, 4, normalize=False, key=jax.random.key(0))
    counts = jnp.array([7, 0, 0, 0, 0, 0, 0, 0])
    live = np.asarray(q.codebook_KxD)[0]
    far = np.asarray(_normal(3, (5, 4), shift=20.0))
    z = jnp.asarray(np.concatenate([np.tile(live, (95, 1)), far]))
    new, n = restart_dead_codes(q, z, counts, key=jax.random.key(4))
    assert int(n) == 7
    fresh = np.asarray(new.codebook_KxD)[1:]
    to_far = np.linalg.norm(fresh[:, None] - far[None], axis=-1).min(axis=1)
    assert to_far.max() < 0.01


def test_usage_and_perplexity():
    k = 16
    uniform = code_counts(jnp.arange(4 * k) % k, k)
    np.testing.assert_allclose(perplexity(uniform), k, rtol=1e-5)
    assert float(usage_fraction(uniform)) == 1.0
    single = code_counts(jnp.zeros(50, jnp.int32), k)
    np.testing.assert_allclose(perplexity(single), 1.0, rtol=1e-6)
    np.testing.assert_allclose(usage_fraction(single), 1 / k)


def test_jittable_and_bad_width():
    q = VectorQuantizer(64, 8, key=jax.random.key(0))
    ids = eqx.filter_jit(lambda q, z: q.encode(z))(q, jnp.ones((2, 2, 8)))
    assert ids.shape == (2, 2)
    with pytest.raises(ValueError, match="last axis 8"):
        q.encode(jnp.ones((2, 3)))


def test_restart_schedule():
    due = np.flatnonzero(np.asarray(restart_due(jnp.arange(50), 10)))
    np.testing.assert_array_equal(due, [10, 20, 30, 40])
