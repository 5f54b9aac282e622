"""Solutions to notebook 03's exercises (guidance §2.7, one step of parallel decoding §2.8)."""

import math

import jax.numpy as jnp


def guided_logits(cond, uncond_or_negative, t):
    return (1 + t) * cond - t * uncond_or_negative  # eq. 1


def guidance_scale(step, steps, t_max):
    if steps == 1:
        return t_max
    return t_max * step / (steps - 1)  # 0 at the first step, t_max at the last


def tokens_kept(step, steps, num_tokens):
    masked = num_tokens
    for t in range(step + 1):
        target = math.floor(num_tokens * math.cos(math.pi / 2 * (t + 1) / steps))
        steps_left = steps - 1 - t
        # At least one more token each step, and one still masked for every step left.
        masked = max(min(target, masked - 1), steps_left)
    return num_tokens - masked


def tokens_to_remask(confidence_N, n):
    rank_N = jnp.argsort(jnp.argsort(confidence_N))  # 0 for the least confident
    return rank_N < n
