"""Solutions to notebook 01's exercises (the VQ bottleneck, §2.2)."""

import jax
import jax.numpy as jnp


def nearest_code(z_NxD, codebook_KxD):
    dist_NxK = jnp.sum((z_NxD[:, None, :] - codebook_KxD[None, :, :]) ** 2, axis=-1)
    return jnp.argmin(dist_NxK, axis=1)


def straight_through(z, z_q):
    # Forward: z + (z_q - z) = z_q. Backward: the stopped difference has no gradient, so d/dz is the identity.
    return z + jax.lax.stop_gradient(z_q - z)


def vq_loss(z, z_q, beta):
    codebook = jnp.mean((jax.lax.stop_gradient(z) - z_q) ** 2)  # moves the codes towards the encoder outputs
    commitment = jnp.mean((z - jax.lax.stop_gradient(z_q)) ** 2)  # keeps the encoder near its codes
    return codebook + beta * commitment
