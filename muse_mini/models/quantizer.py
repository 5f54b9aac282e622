"""The VQ codebook: encoder vectors to token ids, the "visual words" Muse's transformers predict (§2.2).

l2-normalised low-dimensional codes (a cosine match, as in ViT-VQGAN), trained by the
VQ-VAE codebook and commitment losses rather than EMA updates, a straight-through
gradient, and error-weighted dead-code restarts; docs/tokenizer.md says why.
Shapes: ``N`` vectors of width ``D`` against ``K`` codes.
"""

from __future__ import annotations

import typing

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


class QuantizerAux(typing.NamedTuple):
    """What a quantizer call reports besides the quantized vectors."""

    ids: Int[Array, "..."]
    codebook_loss: Float[Array, ""]
    commitment_loss: Float[Array, ""]


def _l2_normalize(x: Array, eps: float = 1e-6) -> Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _squared_distances(z_NxD: Array, codes_KxD: Array) -> Float[Array, "N K"]:
    """‖z‖² − 2z·e + ‖e‖²: one matmul, no N×K×D tensor."""
    return (
        jnp.sum(z_NxD**2, axis=1, keepdims=True)
        - 2.0 * z_NxD @ codes_KxD.T
        + jnp.sum(codes_KxD**2, axis=1)[None, :]
    )


class VectorQuantizer(eqx.Module):
    """Nearest-neighbour vector quantizer with a learned codebook (§2.2); any leading shape."""

    codebook_KxD: Float[Array, "K D"]
    codebook_size: int = eqx.field(static=True)
    code_dim: int = eqx.field(static=True)
    commitment_weight: float = eqx.field(static=True)
    normalize: bool = eqx.field(static=True)

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        *,
        commitment_weight: float = 0.25,
        normalize: bool = True,
        key: jax.Array,
    ):
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.commitment_weight = commitment_weight
        self.normalize = normalize
        if normalize:  # uniform on the sphere
            self.codebook_KxD = _l2_normalize(jax.random.normal(key, (codebook_size, code_dim)))
        else:  # ±1/K, as in VQ-VAE
            bound = 1.0 / codebook_size
            self.codebook_KxD = jax.random.uniform(
                key, (codebook_size, code_dim), minval=-bound, maxval=bound
            )

    def codes(self) -> Float[Array, "K D"]:
        """The codebook as the decoder sees it (unit vectors when normalised)."""
        return _l2_normalize(self.codebook_KxD) if self.normalize else self.codebook_KxD

    def _prepare(self, z: Array) -> Array:
        if z.shape[-1] != self.code_dim:
            raise ValueError(f"z: expected last axis {self.code_dim}, got shape {z.shape}")
        return _l2_normalize(z) if self.normalize else z

    def encode(self, z: Float[Array, "... D"]) -> Int[Array, "..."]:
        """Ids of the nearest codes (squared Euclidean distance)."""
        z = self._prepare(z)
        dist_NxK = _squared_distances(z.reshape(-1, self.code_dim), self.codes())
        return jnp.argmin(dist_NxK, axis=1).reshape(z.shape[:-1])

    def embed(self, ids: Int[Array, "..."]) -> Float[Array, "... D"]:
        """Code vectors for token ids (what the decoder consumes)."""
        return jnp.take(self.codes(), ids, axis=0)

    def __call__(self, z: Float[Array, "... D"]) -> tuple[Float[Array, "... D"], QuantizerAux]:
        """Quantize with a straight-through gradient; returns ``(z_q, aux)``."""
        z = self._prepare(z)
        ids = self.encode(z)
        e = self.embed(ids)
        codebook_loss = jnp.mean((jax.lax.stop_gradient(z) - e) ** 2)
        commitment_loss = jnp.mean((z - jax.lax.stop_gradient(e)) ** 2)
        z_q = z + jax.lax.stop_gradient(e - z)
        return z_q, QuantizerAux(ids, codebook_loss, commitment_loss)

    def loss(self, aux: QuantizerAux) -> Float[Array, ""]:
        """VQ-VAE objective: codebook term + β · commitment term."""
        return aux.codebook_loss + self.commitment_weight * aux.commitment_loss


# --------------------------------------------------------------------------
# Usage statistics and dead-code restart


def code_counts(ids: Int[Array, "..."], codebook_size: int) -> Int[Array, " K"]:
    """How often each code is used in ``ids``."""
    return jnp.bincount(ids.reshape(-1), length=codebook_size)


def usage_fraction(counts_K: Array) -> Float[Array, ""]:
    """Fraction of the codebook used at least once."""
    return jnp.mean(counts_K > 0)


def perplexity(counts_K: Array) -> Float[Array, ""]:
    """exp(entropy) of the code distribution: K for uniform use, 1 for a single code."""
    p_K = counts_K / jnp.maximum(jnp.sum(counts_K), 1)
    entropy = -jnp.sum(jnp.where(p_K > 0, p_K * jnp.log(jnp.where(p_K > 0, p_K, 1.0)), 0.0))
    return jnp.exp(entropy)


def restart_dead_codes(
    quantizer: VectorQuantizer,
    z_NxD: Float[Array, "N D"],
    counts_K: Array,
    *,
    key: jax.Array,
    threshold: float = 1.0,
) -> tuple[VectorQuantizer, Int[Array, ""]]:
    """Re-initialise codes used fewer than ``threshold`` times (``counts_K``) to rows of ``z_NxD``.

    Rows are drawn with probability proportional to their squared distance from the nearest
    live code (k-means++ style), so restarts go where the codebook is worst; live codes stay
    bit-identical. Returns ``(quantizer, number_restarted)``.
    """
    z_NxD = quantizer._prepare(z_NxD.reshape(-1, quantizer.code_dim))
    dead_K = counts_K < threshold
    dist_NxK = _squared_distances(z_NxD, quantizer.codes())
    error_N = jnp.min(jnp.where(dead_K[None, :], jnp.inf, dist_NxK), axis=1)
    # No live code at all: every row is equally far (uniform draws).
    error_N = jnp.where(jnp.isfinite(error_N), error_N, 1.0)
    logits_N = jnp.log(jnp.maximum(error_N, 1e-12))
    pick_K = jax.random.categorical(key, logits_N, shape=(quantizer.codebook_size,))
    # A little noise so two dead codes restarted on the same vector can separate.
    noise_KxD = 1e-3 * jax.random.normal(jax.random.fold_in(key, 1), (quantizer.codebook_size, quantizer.code_dim))
    fresh_KxD = z_NxD[pick_K] + noise_KxD
    codebook_KxD = jnp.where(dead_K[:, None], fresh_KxD, quantizer.codebook_KxD)
    quantizer = eqx.tree_at(lambda q: q.codebook_KxD, quantizer, codebook_KxD)
    return quantizer, jnp.sum(dead_K)


def restart_due(step: Int[Array, ""], every: int) -> Bool[Array, ""]:
    """Whether dead codes are restarted before update ``step``: every ``every`` steps."""
    return (step > 0) & (step % every == 0)
