"""Classifier-free guidance (Muse §2.7) and the guided decodings every caller runs.

The sampler sees ``ℓg = (1 + t)·ℓc − t·ℓu`` (eq. 1), ℓu without the prompt or with a
negative one. :func:`decode_guided` (generation, in- and outpainting, super-res) and
:func:`edit_guided` (§3.3.2) compile once each. Contexts: ``([lowres,] text, text_mask)``.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from muse_mini.config import EditConfig, SamplerConfig
from muse_mini.decoding.editing import EditTrajectory, mask_free_edit
from muse_mini.decoding.sampler import Trajectory, check_tokens, decode
from muse_mini.decoding.spec import DecodeSpec, check_scalars, sampler_scalars

__all__ = ["apply_guidance", "classifier_free_guidance", "decode_guided", "edit_guided", "guidance_scale",
           "guided_contexts", "superres_pass"]


def guidance_scale(step, steps: int, t_max, schedule: str = "linear"):
    """t at ``step`` (0-based): ``t_max`` (constant), or ``t_max · step / (steps − 1)`` (linear, 0 at the first step)."""
    if schedule == "constant":
        return jnp.asarray(t_max, jnp.float32)
    ramp = jnp.asarray(step, jnp.float32) / max(steps - 1, 1)
    return jnp.asarray(t_max, jnp.float32) * (ramp if steps > 1 else 1.0)


def apply_guidance(cond_logits, uncond_logits, t):
    """Eq. 1 as ℓc + t(ℓc − ℓu), so that t = 0 gives ℓc bit for bit."""
    return cond_logits + t * (cond_logits - uncond_logits)


class GuidedLogits(eqx.Module):
    """``logits_fn(tokens_BxN, step)`` of eq. 1: ℓc and ℓu from one call on a 2B batch."""

    model: Any  # a transformer with ``logits(tokens, cond)``
    cond_2B: Any  # the encoded conditions: B conditional rows, then B unconditional
    scale: jax.Array
    schedule: str = eqx.field(static=True)
    steps: int = eqx.field(static=True)

    def __call__(self, tokens_BxN, step):
        B = tokens_BxN.shape[0]
        tokens_2BxN = jnp.concatenate([tokens_BxN, tokens_BxN], axis=0)
        logits_2BxNxV = jax.vmap(self.model.logits)(tokens_2BxN, self.cond_2B)
        t = guidance_scale(step, self.steps, self.scale, self.schedule)
        return apply_guidance(logits_2BxNxV[:B], logits_2BxNxV[B:], t.astype(logits_2BxNxV.dtype))


def _encode(model, context):
    return jax.vmap(lambda *ctx: model.encode_condition(*ctx))(*context)


def classifier_free_guidance(model, context, uncond, *, scale, spec: DecodeSpec) -> GuidedLogits:
    """``model`` wrapped into eq. 1's ``logits_fn``; both contexts are encoded here, once, not at every step."""
    shapes, uncond_shapes = jax.tree.map(jnp.shape, context), jax.tree.map(jnp.shape, uncond)
    if jax.tree.structure(context) != jax.tree.structure(uncond) or shapes != uncond_shapes:
        raise ValueError(f"uncond: expected the structure and shapes of the context {shapes}, got {uncond_shapes}")
    cond_2B = jax.tree.map(lambda c, u: jnp.concatenate([c, u], axis=0), _encode(model, context), _encode(model, uncond))
    return GuidedLogits(model, cond_2B, jnp.asarray(scale, jnp.float32), spec.guidance_schedule, spec.steps)


def _with_text(context, text, text_mask):
    """``context`` with its trailing ``(text, text_mask)`` replaced, broadcast over the batch."""
    *rest, old_text, old_mask = context
    return (*rest, jnp.broadcast_to(jnp.asarray(text, old_text.dtype), old_text.shape),
            jnp.broadcast_to(jnp.asarray(text_mask, bool), old_mask.shape))


def unconditional_context(context):
    """No prompt: zero text, all-False mask (the 10% dropped in training, §2.7); super-res keeps its low-res input."""
    *_, text, text_mask = context
    return _with_text(context, jnp.zeros_like(text), jnp.zeros(jnp.shape(text_mask), bool))


def guided_contexts(context, negative=None):
    """``(context, uncond)``: ℓu sees the encoded ``negative`` prompt (``(text, mask)``, row 0 shared), or no text."""
    if negative is None:
        return context, unconditional_context(context)
    return context, _with_text(context, negative[0][0], negative[1][0])


@eqx.filter_jit
def _decode(model, context, uncond, key, spec: DecodeSpec, guidance, temperature, choice_temperature,
            tokens_BxN, mask_BxN):
    if tokens_BxN is None:  # text-to-image: every position generated
        batch = jax.tree.leaves(context)[0].shape[0]
        tokens_BxN = jnp.full((batch, model.seq_len), spec.mask_id, jnp.int32)
        mask_BxN = jnp.ones((batch, model.seq_len), bool)
    logits_fn = classifier_free_guidance(model, context, uncond, scale=guidance, spec=spec)
    return decode(logits_fn, tokens_BxN, mask_BxN, key=key, spec=spec, temperature=temperature,
                  choice_temperature=choice_temperature)


def decode_guided(model, context, uncond, key, sampler: SamplerConfig, *, tokens_BxN=None,
                  mask_BxN=None) -> Trajectory:
    """One compiled, guided decoding (§2.7, §2.8) with ``sampler``'s settings: every position, or only
    ``mask_BxN``'s of ``tokens_BxN`` (the inpainting state, §3.3.1)."""
    spec = DecodeSpec.from_sampler(sampler, model.mask_id)  # mask_id == vocabulary size
    if (tokens_BxN is None) != (mask_BxN is None):
        raise ValueError("tokens_BxN, mask_BxN: give both (a partly known map) or neither (generate all)")
    if tokens_BxN is not None:
        check_tokens(tokens_BxN, mask_BxN)
        if jnp.shape(tokens_BxN)[1] != model.seq_len:
            raise ValueError(f"tokens_BxN: the model takes {model.seq_len} tokens per map, "
                             f"got {jnp.shape(tokens_BxN)[1]}")
        tokens_BxN, mask_BxN = jnp.asarray(tokens_BxN, jnp.int32), jnp.asarray(mask_BxN, bool)
    return _decode(model, context, uncond, key, spec, *sampler_scalars(sampler), tokens_BxN, mask_BxN)


@eqx.filter_jit
def _walk(model, context, uncond, tokens_BxN, key, spec: DecodeSpec, guidance, temperature, resample_fraction):
    logits_fn = classifier_free_guidance(model, context, uncond, scale=guidance, spec=spec)
    return mask_free_edit(logits_fn, tokens_BxN, key=key, iterations=spec.steps, mask_id=spec.mask_id,
                          resample_fraction=resample_fraction, top_k=spec.top_k, temperature=temperature)


def edit_guided(model, context, uncond, tokens_BxN, key, edit: EditConfig) -> EditTrajectory:
    """Mask-free editing (§3.3.2) of ``tokens_BxN`` towards the prompt, constant guidance, compiled once."""
    spec = DecodeSpec(steps=edit.iterations, mask_id=model.mask_id, top_k=edit.top_k, guidance_schedule="constant")
    guidance, temperature, _ = check_scalars(guidance=edit.guidance, temperature=edit.temperature,
                                             choice_temperature=0.0)
    return _walk(model, context, uncond, jnp.asarray(tokens_BxN, jnp.int32), key, spec, guidance, temperature,
                 float(edit.resample_fraction))


def superres_pass(superres, base_tokens_BxM, context, key, sampler: SamplerConfig, *, tokens_BxN=None,
                  mask_BxN=None) -> Trajectory:
    """Super-res (§2.4) conditioned on the low-res tokens; with ``tokens_BxN``/``mask_BxN`` only the
    masked high-res tokens are generated (multi-scale inpainting, §3.3.1)."""
    sr_context = (jnp.asarray(base_tokens_BxM, jnp.int32), *context)
    return decode_guided(superres, sr_context, unconditional_context(sr_context), key, sampler,
                         tokens_BxN=tokens_BxN, mask_BxN=mask_BxN)
