"""Notebook 01's exercises: the VQ bottleneck of the image tokenizer (§2.2), checked against
:class:`muse_mini.models.quantizer.VectorQuantizer` (without l2-normalisation, so plain distances)."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.course.checking import Exercise, Wrong, describe, diagnose, expect_shape, run_check, to_array
from muse_mini.models.quantizer import VectorQuantizer

__all__ = ["check_nearest_code", "check_straight_through", "check_vq_loss", "EXERCISES"]

# (N vectors, D dims, K codes): one vector, odd sizes, a bigger batch (the gradient checks use the first two).
SIZES = [(1, 4, 5), (7, 3, 16), (33, 8, 64)]


def quantizer(codebook_KxD, commitment_weight: float = 0.25) -> VectorQuantizer:
    """The library's quantizer holding ``codebook_KxD`` as it is (no normalisation)."""
    K, D = codebook_KxD.shape
    q = VectorQuantizer(K, D, commitment_weight=commitment_weight, normalize=False, key=jax.random.key(0))
    return eqx.tree_at(lambda q: q.codebook_KxD, q, jnp.asarray(codebook_KxD, jnp.float32))


# The library's side, compiled once per shape (eager JAX compiles every operation separately).
@jax.jit
def _library_ids(z_NxD, codebook_KxD):
    return quantizer(codebook_KxD).encode(z_NxD)


@jax.jit
def _library_straight_through(z_NxD, codebook_KxD, w_NxD):
    """The quantizer's output (its straight-through value), and the gradients of ``sum(w · output)``."""
    def weighted(z, codebook):
        return jnp.sum(w_NxD * quantizer(codebook)(z)[0])

    return quantizer(codebook_KxD)(z_NxD)[0], jax.grad(weighted, argnums=(0, 1))(z_NxD, codebook_KxD)


@functools.partial(jax.jit, static_argnums=2)
def _library_vq_loss(z_NxD, codebook_KxD, beta: float):
    def loss(z, codebook):
        q = quantizer(codebook, beta)
        return q.loss(q(z)[1])

    return loss(z_NxD, codebook_KxD), jax.grad(loss, argnums=(0, 1))(z_NxD, codebook_KxD)


def _inputs(seed: int, n: int, d: int, k: int):
    rng = np.random.default_rng(seed)
    # Codes of different lengths, so "largest dot product" and "nearest" disagree.
    codebook = rng.normal(size=(k, d)) * rng.uniform(0.2, 3.0, size=(k, 1))
    return jnp.asarray(rng.normal(size=(n, d)), jnp.float32), jnp.asarray(codebook, jnp.float32)


def check_nearest_code(fn):
    """``nearest_code(z_NxD, codebook_KxD) -> ids_N``: the code at the smallest squared L2 distance (§2.2)."""

    def body(learner):
        for seed, (n, d, k) in enumerate(SIZES):
            z, codebook = _inputs(seed, n, d, k)
            call = describe("nearest_code", z_NxD=z, codebook_KxD=codebook)
            out = to_array(learner(z, codebook, call=call), call, what="integer ids")
            if out.shape == (k,) and k != n:
                raise Wrong(f"{call} returned {k} ids, one per code", "take the argmin over the codes: the N×K "
                                                                      "distance matrix's axis 1")
            expect_shape(out, (n,), call, "one id per row of z")
            if not np.issubdtype(out.dtype, np.integer):
                raise Wrong(f"{call} returned dtype {out.dtype}", "return integer code ids (jnp.argmin gives them)")
            if out.min() < 0 or out.max() >= k:
                raise Wrong(f"{call} returned ids outside [0, {k})", "an id indexes a row of the codebook")
            want = np.asarray(_library_ids(z, codebook))
            z, codebook = np.asarray(z, np.float64), np.asarray(codebook, np.float64)
            dist_NxK = ((z[:, None, :] - codebook[None]) ** 2).sum(-1)
            rows = np.arange(n)
            if np.allclose(dist_NxK[rows, out], dist_NxK[rows, want], rtol=1e-4, atol=1e-4):
                continue  # equal distances (to float32 rounding): a tie broken the other way is right too
            diagnose(out, want, call, [
                (dist_NxK.argmax(1), "you picked the FARTHEST code", "argmin of the distance, not argmax"),
                (np.argmax(z @ codebook.T, axis=1), "you picked the largest dot product",
                 "z·e is the nearest only when every code has the same length; use ‖z − e‖² (codes differ here)"),
                (np.argmin(z @ codebook.T, axis=1), "you picked the smallest dot product",
                 "use the squared distance ‖z − e‖² = ‖z‖² − 2 z·e + ‖e‖²"),
            ], hint="ids = argmin over k of ‖z − codebook[k]‖²", what="ids")

    return run_check("nearest_code", fn, body)


def check_straight_through(fn):
    """``straight_through(z, z_q)``: the value of ``z_q``, the gradient of the identity wrt ``z``, none wrt ``z_q`` (§2.2)."""

    def body(learner):
        learner.probe(jnp.zeros((2, 3)), jnp.ones((2, 3)))
        for seed, (n, d, k) in enumerate(SIZES[:2]):
            z, codebook = _inputs(seed, n, d, k)
            w = jnp.asarray(np.random.default_rng(100 + seed).normal(size=(n, d)), jnp.float32)
            z_q = jnp.asarray(np.asarray(codebook)[np.asarray(_library_ids(z, codebook))])  # the nearest codes
            call = describe("straight_through", z=z, z_q=z_q)
            out = to_array(learner(z, z_q, call=call), call)
            lib_value, (lib_grad_z, _) = _library_straight_through(z, codebook, w)
            expect_shape(out, z.shape, call, "return an array shaped like z and z_q")
            diagnose(out, lib_value, call, [
                (z, "the value is z, not z_q", "the decoder must see the quantized vector: z + stop_gradient(z_q − z)"),
            ], hint="the forward value must equal z_q")
            # d/dz of a weighted sum: the library passes the weights straight through to z, none to the codes.
            grad_z, grad_q = jax.jit(jax.grad(lambda z_, zq: jnp.sum(w * learner(z_, zq, call=call)),
                                              argnums=(0, 1)))(z, z_q)
            diagnose(grad_z, lib_grad_z, f"the gradient wrt z of {call}", [
                (np.zeros(z.shape), "no gradient reaches z (the encoder would never learn)",
                 "stop the gradient of the difference only: z + jax.lax.stop_gradient(z_q − z)"),
            ], hint="the gradient wrt z must pass through unchanged (identity)", what="gradients")
            diagnose(grad_q, np.zeros(z.shape), f"the gradient wrt z_q of {call}", [
                (w, "the gradient also flows into z_q (the codebook)",
                 "stop_gradient the whole difference (z_q − z): the codebook learns from the codebook loss only"),
            ], hint="no gradient may reach z_q through the straight-through path", what="gradients")

    return run_check("straight_through", fn, body)


def check_vq_loss(fn):
    """``vq_loss(z, z_q, beta)``: ``mean((sg(z) − z_q)²) + beta · mean((z − sg(z_q))²)`` (VQ-VAE, §2.2)."""

    def body(learner):
        learner.probe(jnp.zeros((2, 3)), jnp.ones((2, 3)), 0.25)
        for seed, ((n, d, k), beta) in enumerate(zip(SIZES[:2], (0.25, 0.4))):
            z, codebook = _inputs(seed, n, d, k)
            ids = _library_ids(z, codebook)
            call = describe("vq_loss", z=z, z_q=codebook[ids], beta=beta)

            def mine(z_, codebook_):
                return learner(z_, jnp.take(codebook_, ids, axis=0), beta, call=call)

            out = to_array(mine(z, codebook), call, what="a scalar loss")
            expect_shape(out, (), call, "average into one number (jnp.mean), the loss of the whole batch")
            want, want_grads = _library_vq_loss(z, codebook, beta)
            mse = float(np.mean((np.asarray(z, np.float64) - np.asarray(codebook[ids], np.float64)) ** 2))
            diagnose(out, want, call, [
                (mse * (1 + beta) * n * d, "you summed the squared errors", "average them: jnp.mean over every entry"),
                (mse * (1 + beta) * d, "you summed over D and averaged over N", "jnp.mean over every entry"),
                (2 * mse, "beta is missing", "weight the commitment term by beta: codebook + beta * commitment"),
                (mse * (1 + beta) / 2, "you halved the loss", "no ½: codebook + beta * commitment"),
            ], hint="codebook term + beta · commitment term, both mean squared errors", what="the loss")
            got_grads = jax.jit(jax.grad(mine, argnums=(0, 1)))(z, codebook)
            _check_vq_gradients(got_grads, want_grads, beta, call)

    return run_check("vq_loss", fn, body)


def _check_vq_gradients(got, want, beta, call):
    """The stop-gradients: only β·commitment reaches z, only the codebook term reaches the codes."""
    (got_z, got_c), (want_z, want_c) = jax.tree.map(np.asarray, (got, want))
    diagnose(got_z, want_z, f"the gradient wrt z of {call}", [
        (want_z * (1 + beta) / beta, "missing stop-gradient: the codebook term also pulls z",
         "codebook term: mean((stop_gradient(z) − z_q)²), so it moves the codes only"),
        (want_z / beta, "beta weighs the wrong term",
         "β scales the commitment term mean((z − stop_gradient(z_q))²), the one whose gradient reaches the encoder"),
        (np.zeros(want_z.shape), "no gradient reaches z", "the commitment term must keep z's gradient: "
                                                     "mean((z − stop_gradient(z_q))²)"),
    ], hint="only beta · commitment may reach z", what="gradients", rtol=1e-3, atol=1e-7)
    diagnose(got_c, want_c, f"the gradient wrt the codes z_q of {call}", [
        (want_c * (1 + beta), "missing stop-gradient: the commitment term also moves the codebook",
         "commitment term: mean((z − stop_gradient(z_q))²)"),
        (np.zeros(want_c.shape), "no gradient reaches z_q",
         "the codebook term must keep z_q's gradient: mean((stop_gradient(z) − z_q)²)"),
    ], hint="only the codebook term may reach z_q", what="gradients", rtol=1e-3, atol=1e-7)


EXERCISES = (
    Exercise("01", "nearest_code", check_nearest_code, "§2.2",
             "the id of each vector's nearest code (smallest squared L2 distance) in a K×D codebook"),
    Exercise("01", "straight_through", check_straight_through, "§2.2",
             "a value equal to z_q whose gradient passes to z unchanged and not to z_q (straight-through)"),
    Exercise("01", "vq_loss", check_vq_loss, "§2.2",
             "codebook term + beta · commitment term, each with its stop-gradient"),
)
