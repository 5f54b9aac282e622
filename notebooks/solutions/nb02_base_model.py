"""Solutions to notebook 02's exercises (variable masking rate §2.6, masked-token loss §2.3)."""

import math

import jax
import jax.numpy as jnp


def mask_rate(u):
    # The arccos density's CDF is F(r) = 1 - (2/pi) arccos(r); solving F(r) = 1 - u gives r = cos(pi/2 u).
    return jnp.cos(jnp.pi / 2 * u)


def num_masked(rate, num_tokens):
    count = math.ceil(rate * num_tokens)
    return min(max(count, 1), num_tokens)  # at least one token to predict, at most all of them


def masked_loss(logits_BxNxV, targets_BxN, mask_BxN):
    logp_BxNxV = jax.nn.log_softmax(logits_BxNxV, axis=-1)
    nll_BxN = -jnp.take_along_axis(logp_BxNxV, targets_BxN[..., None], axis=-1)[..., 0]
    weight_BxN = mask_BxN.astype(jnp.float32)
    return jnp.sum(nll_BxN * weight_BxN) / jnp.sum(weight_BxN)
