"""The adversarial part of VQGAN training (§A.2: weight 0.1): a PatchGAN discriminator and hinge losses, used by training only."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from muse_mini.models.vqgan import norm_groups

__all__ = ["PatchDiscriminator", "hinge_d_loss", "hinge_g_loss"]



class PatchDiscriminator(eqx.Module):
    """PatchGAN: stride-2 4×4 convs, one logit per overlapping patch; GroupNorm, so no BatchNorm state."""

    convs: list[eqx.nn.Conv2d]
    norms: list[eqx.nn.GroupNorm]
    head: eqx.nn.Conv2d

    def __init__(self, channels: int = 64, num_layers: int = 3, *, key: jax.Array):
        keys = jax.random.split(key, num_layers + 2)
        widths = [channels * min(2**i, 8) for i in range(num_layers + 1)]
        cin, self.convs, self.norms = 3, [], []
        for i, width in enumerate(widths):
            stride = 2 if i < num_layers else 1
            self.convs.append(eqx.nn.Conv2d(cin, width, 4, stride=stride, padding=1, key=keys[i]))
            self.norms.append(eqx.nn.GroupNorm(norm_groups(width), width))
            cin = width
        self.head = eqx.nn.Conv2d(cin, 1, 4, stride=1, padding=1, key=keys[-1])

    def __call__(self, img_HxWx3: Float[Array, "H W 3"]) -> Float[Array, "h w"]:
        h = jnp.transpose(img_HxWx3, (2, 0, 1))
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = conv(h)
            h = h if i == 0 else norm(h)  # no norm on the first layer, as in pix2pix
            h = jax.nn.leaky_relu(h, 0.2)
        return self.head(h)[0]


def hinge_d_loss(logits_real: Array, logits_fake: Array) -> Float[Array, ""]:
    """Discriminator hinge loss: push real logits above +1 and fake below −1."""
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def hinge_g_loss(logits_fake: Array) -> Float[Array, ""]:
    """Generator side of the hinge GAN: raise the discriminator's fake logits."""
    return -jnp.mean(logits_fake)
