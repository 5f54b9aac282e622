"""Classifier-free guidance and negative prompts (Muse §2.7, eq. 1).

At each decoding step the model is run twice, with the prompt (ℓc) and without
it (ℓu), and the sampler sees ::

    ℓg = (1 + t)·ℓc − t·ℓu                                  (eq. 1)

where the guidance scale ``t`` may rise over the steps (``"linear"``, the
paper's choice: early tokens are sampled freely, later ones follow the prompt).
A *negative prompt* replaces ℓu with the logits conditioned on that prompt, so
the image moves towards the positive prompt and away from the negative one.

:func:`classifier_free_guidance` wraps a batched model into the
``logits_fn(tokens_BxN, step)`` that :func:`muse_mini.decoding.sampler.decode` expects;
it is a wrapper, not a second decoding loop. Both passes share one forward call
on a batch of 2B, which is what a GPU likes.

Contexts are pytrees whose leaves lead with the batch axis and end with the text:
``(text_BxLxD, text_mask_BxL)`` for the base model, ``(lowres_BxM, text_BxLxD,
text_mask_BxL)`` for super-resolution. The model sees them as
``model_fn(tokens_BxN, context)``; :class:`BatchedModel` adapts a one-example
Equinox model (``model(tokens_N, *context)``) with ``vmap``.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from muse_mini.decoding.spec import GUIDANCE_SCHEDULES, check_guidance  # noqa: F401



class BatchedModel(eqx.Module):
    """``model_fn(tokens_BxN, context)`` from a one-example ``model(tokens_N, *context)``."""

    model: Any

    def __call__(self, tokens_BxN, context):
        return jax.vmap(lambda tokens_N, ctx: self.model(tokens_N, *ctx))(tokens_BxN, context)


def guidance_scale(step, steps: int, t_max, schedule: str = "linear"):
    """The guidance scale t at ``step`` (0-based) of ``steps``.

    ``"constant"``: t = t_max. ``"linear"``: t = t_max · step / (steps − 1), i.e.
    0 at the first step and t_max at the last; with a single step, t = t_max.
    ``schedule`` and ``t_max`` are checked where the guided wrapper is built
    (:func:`classifier_free_guidance`), not at every step.
    """
    if schedule == "constant":
        return jnp.asarray(t_max, jnp.float32)
    ramp = jnp.asarray(step, jnp.float32) / max(steps - 1, 1)
    return jnp.asarray(t_max, jnp.float32) * (ramp if steps > 1 else 1.0)


def apply_guidance(cond_logits, uncond_logits, t):
    """Eq. 1, written as ℓc + t(ℓc − ℓu) so that t = 0 returns ℓc bit for bit."""
    return cond_logits + t * (cond_logits - uncond_logits)


class GuidedLogits(eqx.Module):
    """The ``logits_fn(tokens_BxN, step)`` of eq. 1 (see :func:`classifier_free_guidance`).

    A Module, so that under ``eqx.filter_jit`` the contexts and the scale are
    traced arrays: a new prompt or guidance value reuses the compiled sampler.
    The conditional and unconditional contexts are stacked into one 2B batch
    once, when the wrapper is built, not at every step.
    """

    model_fn: Callable
    context_2B: Any
    scale: jax.Array
    schedule: str = eqx.field(static=True)
    steps: int = eqx.field(static=True)

    def __init__(self, model_fn, cond, uncond, scale, schedule: str, steps: int):
        self.model_fn = model_fn
        self.context_2B = jax.tree.map(lambda c, u: jnp.concatenate([c, u], axis=0), cond, uncond)
        self.scale = scale
        self.schedule = schedule
        self.steps = steps

    def __call__(self, tokens_BxN, step):
        B = tokens_BxN.shape[0]
        tokens_2BxN = jnp.concatenate([tokens_BxN, tokens_BxN], axis=0)
        logits_2BxNxV = self.model_fn(tokens_2BxN, self.context_2B)
        t = guidance_scale(step, self.steps, self.scale, self.schedule)
        return apply_guidance(logits_2BxNxV[:B], logits_2BxNxV[B:], t.astype(logits_2BxNxV.dtype))


class ConditionalLogits(eqx.Module):
    """Unguided ``logits_fn``: the conditional pass only (t = 0 saves half the work)."""

    model_fn: Callable
    cond: Any

    def __call__(self, tokens_BxN, step):
        del step
        return self.model_fn(tokens_BxN, self.cond)


def classifier_free_guidance(
    model_fn: Callable, *, cond, uncond, scale, schedule: str = "linear", steps: int
):
    """Wrap ``model_fn(tokens_BxN, context)`` into the guided ``logits_fn`` of eq. 1.

    ``cond`` and ``uncond`` are contexts with the same structure and batch
    size; ``uncond`` is :func:`unconditional_context` for plain CFG or
    :func:`negative_prompt_context` for a negative prompt. ℓc and ℓu come from
    one ``model_fn`` call on the concatenated batch (2B). A Python scale of
    exactly 0 skips the unconditional half.
    """
    check_guidance(scale, schedule)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps: expected an integer >= 1, got {steps!r}")
    cond_shapes = jax.tree.map(jnp.shape, cond)
    uncond_shapes = jax.tree.map(jnp.shape, uncond)
    if jax.tree.structure(cond) != jax.tree.structure(uncond) or cond_shapes != uncond_shapes:
        raise ValueError(
            f"uncond: expected the structure and shapes of cond {cond_shapes}, got {uncond_shapes}"
        )
    if isinstance(scale, numbers.Real) and scale == 0:
        return ConditionalLogits(model_fn, cond)
    return GuidedLogits(model_fn, cond, uncond, jnp.asarray(scale, jnp.float32), schedule, steps)


def from_config(model_fn: Callable, *, cond, uncond, cfg):
    """:func:`classifier_free_guidance` with a SamplerConfig's guidance, schedule and steps."""
    return classifier_free_guidance(
        model_fn, cond=cond, uncond=uncond, scale=cfg.guidance,
        schedule=cfg.guidance_schedule, steps=cfg.steps,
    )


def with_text(context, text_BxLxD, text_mask_BxL):
    """``context`` with its trailing ``(text, text_mask)`` replaced; other leaves kept.

    A text without a batch axis (``LxD`` / ``L``) is broadcast over the batch.
    """
    *rest, old_text, old_mask = context
    text = jnp.broadcast_to(jnp.asarray(text_BxLxD, old_text.dtype), old_text.shape)
    mask = jnp.broadcast_to(jnp.asarray(text_mask_BxL, bool), old_mask.shape)
    return (*rest, text, mask)


def unconditional_context(context):
    """The "no prompt" context: zero text, all-False mask (the 10% dropped in training, §2.7).

    For super-resolution the low-res tokens stay: only the text is removed.
    """
    *_, text, text_mask = context
    return with_text(context, jnp.zeros_like(text), jnp.zeros(jnp.shape(text_mask), bool))


def negative_prompt_context(context, negative_text, negative_mask):
    """The context for ℓu under a negative prompt (§2.7): ``context`` with the negative text.

    ``negative_text``/``negative_mask`` are the encoded negative prompt, with a
    batch axis or without one (shared by the batch). Pass the result as
    ``uncond`` to :func:`classifier_free_guidance`.
    """
    return with_text(context, negative_text, negative_mask)
