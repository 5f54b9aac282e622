"""Compiled, guided decodings of a trained transformer: generation, inpainting and mask-free editing.

The sampler (:mod:`muse_mini.decoding.sampler`) and the editing walk
(:mod:`muse_mini.decoding.editing`) take a bare ``logits_fn``. Here a model
and its contexts become that function, with classifier-free guidance (§2.7)
wrapped around it. The condition is encoded once per call, and the whole
loop is one ``eqx.filter_jit``: guidance and temperatures are traced, so a new
value does not recompile. Text-to-image starts from an all-``[MASK]`` map;
inpainting and outpainting (§3.3.1) start from an image's tokens with a
region masked, through the same function.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from muse_mini.config import SamplerConfig
from muse_mini.decoding.editing import EditTrajectory, mask_free_edit
from muse_mini.decoding.guidance import GuidedLogits, negative_prompt_context, unconditional_context
from muse_mini.decoding.sampler import Trajectory, check_tokens, run_decode
from muse_mini.decoding.spec import DecodeSpec, sampler_scalars
from muse_mini.models.superres import lowres_condition


class EncodedModel(eqx.Module):
    """``model_fn(tokens_BxN, cond)`` over conditions the model encoded once (``encode_condition``)."""

    model: Any

    def __call__(self, tokens_BxN, cond):
        return jax.vmap(lambda tokens_N, c: self.model.logits(tokens_N, c))(tokens_BxN, cond)


def encode_context(model, context):
    """Encode a batch of raw contexts once: ``(text, mask)`` or ``(lowres, text, mask)``."""
    return jax.vmap(lambda *ctx: model.encode_condition(*ctx))(*context)


@eqx.filter_jit
def decode_guided(model, context, uncond, key, spec: DecodeSpec, guidance, temperature, choice_temperature,
                  tokens_BxN=None, mask_BxN=None):
    """One compiled decoding, start to finish, with guidance (§2.7) wrapped around the model.

    Without ``tokens_BxN`` every position is generated (text-to-image). With
    it, only the positions ``mask_BxN`` marks are, and the rest stay as given
    (§3.3.1). The condition and the unconditional context are encoded once,
    before the loop; each step runs only the masked-token transformer on them.
    """
    batch = jax.tree.leaves(context)[0].shape[0]
    logits_fn = GuidedLogits(EncodedModel(model), encode_context(model, context), encode_context(model, uncond),
                             guidance, spec.guidance_schedule, spec.steps)
    if tokens_BxN is None:
        tokens_BxN = jnp.full((batch, model.seq_len), spec.mask_id, jnp.int32)
        mask_BxN = jnp.ones((batch, model.seq_len), bool)
    return run_decode(logits_fn, tokens_BxN, mask_BxN, key=key, spec=spec,
                      temperature=temperature, choice_temperature=choice_temperature)


def decode_with_sampler(model, context, uncond, key, sampler: SamplerConfig, *, tokens_BxN=None,
                        mask_BxN=None) -> Trajectory:
    """Check ``sampler`` once on the host (clear errors), then run the compiled decoding.

    Its static half becomes a :class:`DecodeSpec` (the compiled loop's shape);
    guidance and temperatures are traced, so changing them does not recompile.
    ``tokens_BxN`` and ``mask_BxN`` (both or neither) start from a partly
    known token map: the inpainting state.
    """
    spec = DecodeSpec.from_sampler(sampler, model.mask_id)  # mask_id == vocabulary size
    if (tokens_BxN is None) != (mask_BxN is None):
        raise ValueError("tokens_BxN, mask_BxN: give both (a partly known map) or neither (generate all)")
    if tokens_BxN is not None:
        check_tokens(tokens_BxN, mask_BxN)
        if jnp.shape(tokens_BxN)[1] != model.seq_len:
            raise ValueError(f"tokens_BxN: the model takes {model.seq_len} tokens per map, "
                             f"got {jnp.shape(tokens_BxN)[1]}")
        tokens_BxN, mask_BxN = jnp.asarray(tokens_BxN, jnp.int32), jnp.asarray(mask_BxN, bool)
    return decode_guided(model, context, uncond, key, spec, *sampler_scalars(sampler), tokens_BxN, mask_BxN)


@eqx.filter_jit
def _edit_guided(model, context, uncond, tokens_BxN, key, guidance, temperature, *, iterations: int,
                 resample_fraction: float, top_k):
    logits_fn = GuidedLogits(EncodedModel(model), encode_context(model, context), encode_context(model, uncond),
                             guidance, "constant", iterations)
    return mask_free_edit(logits_fn, tokens_BxN, key=key, iterations=iterations, mask_id=model.mask_id,
                          resample_fraction=resample_fraction, top_k=top_k, temperature=temperature)


def edit_with_guidance(model, context, uncond, tokens_BxN, key, *, iterations: int = 100,
                       resample_fraction: float = 0.08, guidance: float = 4.0, top_k: int | None = 3,
                       temperature: float = 1.0) -> EditTrajectory:
    """Mask-free editing (§3.3.2) of ``tokens_BxN`` towards ``context``'s prompt, compiled once.

    The paper's setting: 100 iterations, 8% of the tokens resampled in each,
    top-k 3, constant guidance 4. Guidance and temperature are traced.
    """
    return _edit_guided(model, context, uncond, jnp.asarray(tokens_BxN, jnp.int32), key,
                        jnp.asarray(guidance, jnp.float32), jnp.asarray(temperature, jnp.float32),
                        iterations=iterations, resample_fraction=float(resample_fraction), top_k=top_k)


def guided_contexts(context, negative=None):
    """``(context, uncond)`` for guidance (§2.7): ℓu sees the encoded ``negative`` prompt
    (``(text, mask)``, its first row shared by the batch), or no text at all."""
    if negative is None:
        return context, unconditional_context(context)
    return context, negative_prompt_context(context, negative[0][0], negative[1][0])


def superres_pass(superres, base_tokens_BxM, context, key, sampler: SamplerConfig, *, images=None, tokenizer=None,
                  tokens_BxN=None, mask_BxN=None) -> Trajectory:
    """Super-res (§2.4) conditioned on low-res tokens: every high-res token generated, or only
    ``mask_BxN`` of ``tokens_BxN`` (multi-scale inpainting, §3.3.1).

    ``images`` (the low-res tokens decoded) or ``tokenizer`` serve a model that reads pixels;
    a model that reads token ids needs neither, and nothing is decoded for it.
    """
    lowres = lowres_condition(superres, base_tokens_BxM, tokenizer=tokenizer, images=images)
    sr_context = (lowres, *context)
    return decode_with_sampler(superres, sr_context, unconditional_context(sr_context), key, sampler,
                               tokens_BxN=tokens_BxN, mask_BxN=mask_BxN)
