"""Iterative parallel decoding (Muse §2.8; MaskGIT, Chang et al. 2022, Alg. 1).

Decoding starts from a token map in which some positions (all of them, for
text-to-image) hold ``[MASK]``. Each step predicts every masked token at once,
keeps the most confident predictions and re-masks the rest, so that the number
still masked follows a schedule (cosine by default) down to zero at the last
step. Positions that start unmasked are never touched, which is all that
inpainting, outpainting (§3.3.1) and super-resolution need.

The whole loop is one ``jax.lax.scan``: jit the caller (``eqx.filter_jit``) and
the loop compiles once, with no host round trip per step. The model enters as
``logits_fn(tokens_BxN, step) -> logits_BxNxV``; the sampler never sees text,
so classifier-free guidance (``muse_mini.decoding.guidance``) is just a wrapper around
the model.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.decoding import masking
from muse_mini.decoding.spec import (  # noqa: F401  (check_* are part of this module's API)
    DecodeSpec, check_key, check_real, check_scalars, check_steps, check_top_k,
)

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]


class DecodeState(NamedTuple):
    """What one step hands to the next."""

    tokens_BxN: jax.Array  # int32; still-masked positions hold mask_id
    mask_BxN: jax.Array  # bool; True where a token is still to be generated
    num_initial_B: jax.Array  # int32; the schedule counts relative to this


class StepOutput(NamedTuple):
    """What one step reports besides the new state (for the trajectory)."""

    sampled_BxN: jax.Array  # this step's prediction everywhere (fixed tokens copied)
    confidence_BxN: jax.Array  # the score ranked at this step; +inf where already fixed


class Trajectory(eqx.Module):
    """The state after every step of :func:`decode` (T = steps).

    ``tokens_BxTxN[:, t]`` is the map after step t (masked positions hold
    ``mask_id``); ``mask_BxTxN[:, t]`` marks what is still masked after step t;
    ``sampled_BxTxN[:, t]`` is the step's full prediction, useful to show masked
    cells as the model currently sees them; ``confidence_BxTxN[:, t]`` is the
    score that step ranked (log-probability plus annealed Gumbel noise, ``+inf``
    for tokens fixed earlier or given).
    """

    tokens_BxTxN: jax.Array
    mask_BxTxN: jax.Array
    sampled_BxTxN: jax.Array
    confidence_BxTxN: jax.Array
    initial_mask_BxN: jax.Array
    tokens_BxN: jax.Array

    @property
    def steps(self) -> int:
        return self.tokens_BxTxN.shape[1]

    @property
    def fixed_BxTxN(self) -> jax.Array:
        """True where a token became fixed at step t (was masked before it, not after)."""
        before_BxTxN = jnp.concatenate(
            [self.initial_mask_BxN[:, None], self.mask_BxTxN[:, :-1]], axis=1
        )
        return before_BxTxN & ~self.mask_BxTxN

    @property
    def fixed_step_BxN(self) -> jax.Array:
        """The step at which each token got fixed; -1 for tokens given at the start."""
        # Masks only shrink, so a token fixed at step k was masked after steps 0..k-1.
        steps_masked_BxN = jnp.sum(self.mask_BxTxN, axis=1, dtype=jnp.int32)
        return jnp.where(self.initial_mask_BxN, steps_masked_BxN, -1)


# --------------------------------------------------------------------------
# Parameter checks (host side, before tracing anything; the scalar and static
# checks are defined once, in muse_mini.decoding.spec)


def check_tokens(tokens_BxN, mask_BxN=None) -> None:
    """Shapes/dtypes of a token batch and (optionally) its boolean mask."""
    shape = tuple(jnp.shape(tokens_BxN))
    if len(shape) != 2:
        raise ValueError(f"tokens: expected shape (batch, num_tokens), got {shape}")
    if 0 in shape:
        raise ValueError(f"tokens: empty batch or sequence, shape {shape}")
    if not jnp.issubdtype(jnp.result_type(tokens_BxN), jnp.integer):
        raise ValueError(f"tokens: expected an integer dtype, got {jnp.result_type(tokens_BxN)}")
    if mask_BxN is None:
        return
    if tuple(jnp.shape(mask_BxN)) != shape:
        raise ValueError(
            f"tokens and mask shapes differ: tokens {shape} vs mask {tuple(jnp.shape(mask_BxN))}"
        )
    if jnp.result_type(mask_BxN) != jnp.bool_:
        raise ValueError(f"mask: expected dtype bool, got {jnp.result_type(mask_BxN)}")


def logits_width(logits_fn: LogitsFn, tokens_BxN) -> int:
    """V of ``logits_fn``'s ``BxNxV`` output, found by abstract tracing (no FLOPs).

    Logits may or may not include a column for [MASK]; it is never sampled.
    """
    step = jax.ShapeDtypeStruct((), jnp.int32)
    tokens = jax.ShapeDtypeStruct(jnp.shape(tokens_BxN), jnp.int32)
    out = jax.eval_shape(logits_fn, tokens, step)
    B, N = jnp.shape(tokens_BxN)
    if len(out.shape) != 3 or tuple(out.shape[:2]) != (B, N):
        raise ValueError(f"logits_fn: expected logits of shape ({B}, {N}, V), got {tuple(out.shape)}")
    return out.shape[-1]


# --------------------------------------------------------------------------
# One step


def sample_tokens(logits_BxNxV, gumbel_BxNxV, *, temperature=1.0, top_k: int | None = None):
    """One token per position from ``softmax(logits / temperature)``, optionally top-k.

    Gumbel-max: ``argmax(logits / temperature + g)`` with standard Gumbel noise
    ``g`` is a categorical draw. Taking the noise as an argument lets a decoding
    step draw all its randomness in one call (RNG ops dominate compile time on CPU).
    """
    if top_k == 1:  # exactly greedy, whatever the temperature
        return jnp.argmax(logits_BxNxV, axis=-1).astype(jnp.int32)
    if top_k is not None:
        kth_BxNx1 = jax.lax.top_k(logits_BxNxV, top_k)[0][..., -1:]
        logits_BxNxV = jnp.where(logits_BxNxV < kth_BxNx1, -jnp.inf, logits_BxNxV)
    return jnp.argmax(logits_BxNxV / temperature + gumbel_BxNxV, axis=-1).astype(jnp.int32)


@functools.lru_cache(maxsize=64)
def masked_count_table(schedule: str, steps: int, num_tokens: int) -> np.ndarray:
    """Entry ``[n, t]``: tokens still masked after step t when n were masked at the start.

    Row n is ``masking.masking_table(schedule, steps, n)`` (one token revealed per
    step at least). A partial mask may have fewer masked tokens than steps; then
    the row is ``⌊n·γ((t+1)/steps)⌋``, the same schedule without that guarantee.
    Looked up by each example's own count, so partial masks follow the schedule.
    """
    ratio_T = np.arange(1, steps + 1) / steps
    rows = []
    for n in range(num_tokens + 1):
        if n >= steps:
            rows.append(masking.masking_table(schedule, steps, n))
        else:
            rows.append(np.floor(n * masking.mask_schedule(schedule, ratio_T) + 1e-9))
    table_CxT = np.stack(rows).astype(np.int32)
    table_CxT[:, -1] = 0
    table_CxT.setflags(write=False)
    return table_CxT


def predict_logits(logits_fn: LogitsFn, tokens_BxN, step, mask_id: int):
    """``logits_fn`` in float32, with any column for ``[MASK]`` (and beyond) ruled out."""
    logits_BxNxV = logits_fn(tokens_BxN, step).astype(jnp.float32)
    if logits_BxNxV.shape[-1] > mask_id:
        logits_BxNxV = logits_BxNxV.at[..., mask_id:].set(-jnp.inf)
    return logits_BxNxV


def init_state(tokens_BxN, mask_BxN, mask_id: int) -> DecodeState:
    """The decoding state before step 0: masked positions set to ``mask_id``."""
    tokens_BxN = jnp.asarray(tokens_BxN, jnp.int32)
    mask_BxN = jnp.asarray(mask_BxN, bool)
    return DecodeState(
        tokens_BxN=jnp.where(mask_BxN, mask_id, tokens_BxN),
        mask_BxN=mask_BxN,
        num_initial_B=jnp.sum(mask_BxN, axis=-1, dtype=jnp.int32),
    )


def choice_noise_scale(choice_temperature, step, steps: int):
    """The confidence noise's scale at ``step`` (0-based): MaskGIT's
    ``choice_temperature · (1 − (step + 1) / steps)``.

    MaskGIT anneals by the ratio of steps *done after this one*, so the last
    step ranks by confidence alone (its noise is zero).
    """
    return choice_temperature * (1.0 - (step + 1) / steps)


def decode_step(
    logits_fn: LogitsFn,
    state: DecodeState,
    step,
    *,
    key,
    steps: int,
    mask_id: int,
    schedule: str = "cosine",
    temperature=1.0,
    top_k: int | None = None,
    choice_temperature=4.5,
) -> tuple[DecodeState, StepOutput]:
    """One step of Muse §2.8 / MaskGIT: predict, sample, rank, re-mask.

    ``key`` is the key of the whole decode: the step folds in its own index, so
    a Python loop over this function and :func:`decode` draw the same numbers.
    Confidence is the log-probability of the sampled token under the model's
    (guided, untempered) distribution, as in MaskGIT; Gumbel noise scaled by
    :func:`choice_noise_scale` randomises which tokens are kept early on and
    fades out towards the end.
    """
    step = jnp.asarray(step, jnp.int32)
    logits_BxNxV = predict_logits(logits_fn, state.tokens_BxN, step, mask_id)
    B, N, V = logits_BxNxV.shape
    # Noise for sampling (V columns) and for the choice (one more), in one draw.
    gumbel_BxNxV1 = jax.random.gumbel(jax.random.fold_in(key, step), (B, N, V + 1))

    sampled_BxN = sample_tokens(
        logits_BxNxV, gumbel_BxNxV1[..., :V], temperature=temperature, top_k=top_k
    )
    sampled_BxN = jnp.where(state.mask_BxN, sampled_BxN, state.tokens_BxN)

    logp_BxNxV = jax.nn.log_softmax(logits_BxNxV, axis=-1)
    logp_BxN = jnp.take_along_axis(logp_BxNxV, sampled_BxN[..., None], axis=-1)[..., 0]
    noise_scale = choice_noise_scale(choice_temperature, step, steps)
    confidence_BxN = jnp.where(
        state.mask_BxN, logp_BxN + noise_scale * gumbel_BxNxV1[..., V], jnp.inf
    )

    num_tokens = state.mask_BxN.shape[-1]
    table_CxT = jnp.asarray(masked_count_table(schedule, steps, num_tokens))
    num_masked_B = table_CxT[state.num_initial_B, step]
    # Never re-mask a fixed token, and leave nothing masked after the last step.
    num_masked_B = jnp.minimum(num_masked_B, jnp.sum(state.mask_BxN, axis=-1, dtype=jnp.int32))
    num_masked_B = jnp.where(step >= steps - 1, 0, num_masked_B)

    # Rank ascending by confidence (stable argsort breaks ties); fixed tokens sit
    # at +inf, so only still-masked positions can land among the lowest ranks.
    rank_BxN = jnp.argsort(jnp.argsort(confidence_BxN, axis=-1), axis=-1)
    mask_BxN = rank_BxN < num_masked_B[:, None]
    tokens_BxN = jnp.where(mask_BxN, mask_id, sampled_BxN)
    new_state = DecodeState(tokens_BxN, mask_BxN, state.num_initial_B)
    return new_state, StepOutput(sampled_BxN, confidence_BxN)


# --------------------------------------------------------------------------
# The loop


def check_decode_args(
    logits_fn, tokens_BxN, mask_BxN, *, steps, mask_id, schedule, temperature, top_k,
    choice_temperature,
) -> DecodeSpec:
    """Every argument check of :func:`decode`, with a ValueError naming the argument; returns the spec."""
    spec = DecodeSpec(steps=steps, mask_id=mask_id, schedule=schedule)
    check_scalars(temperature=temperature, choice_temperature=choice_temperature)
    check_tokens(tokens_BxN, mask_BxN)
    check_top_k(top_k, min(logits_width(logits_fn, tokens_BxN), mask_id))
    return dataclasses.replace(spec, top_k=top_k)


def decode(
    logits_fn: LogitsFn,
    tokens_BxN,
    mask_BxN,
    *,
    key,
    steps: int,
    mask_id: int,
    schedule: str = "cosine",
    temperature=1.0,
    top_k: int | None = None,
    choice_temperature=4.5,
) -> Trajectory:
    """Generate the masked positions of ``tokens_BxN`` in ``steps`` parallel steps (§2.8).

    ``mask_BxN`` (bool) marks positions to generate; the others are kept as
    given and never re-masked. For text-to-image pass ``mask = ones`` (any
    ``tokens``). After step t each example keeps
    ``masking.num_masked_after_step(schedule, t, steps, n0)`` tokens masked,
    with ``n0`` its own initial masked count, and none after the last step.
    One ``lax.scan``: wrap the call in ``eqx.filter_jit`` to compile it once.
    """
    check_key(key)
    spec = check_decode_args(
        logits_fn, tokens_BxN, mask_BxN, steps=steps, mask_id=mask_id, schedule=schedule,
        temperature=temperature, top_k=top_k, choice_temperature=choice_temperature,
    )
    return run_decode(logits_fn, tokens_BxN, mask_BxN, key=key, spec=spec, temperature=temperature,
                      choice_temperature=choice_temperature)


def run_decode(logits_fn: LogitsFn, tokens_BxN, mask_BxN, *, key, spec: DecodeSpec, temperature,
               choice_temperature) -> Trajectory:
    """The decoding loop of :func:`decode`, for callers that validated ``spec`` and the scalars already."""
    state = init_state(tokens_BxN, mask_BxN, spec.mask_id)

    def body(state, step):
        state, out = decode_step(
            logits_fn, state, step, key=key, steps=spec.steps, mask_id=spec.mask_id, schedule=spec.schedule,
            temperature=temperature, top_k=spec.top_k, choice_temperature=choice_temperature,
        )
        return state, (state.tokens_BxN, state.mask_BxN, out.sampled_BxN, out.confidence_BxN)

    final, per_step = jax.lax.scan(body, state, jnp.arange(spec.steps, dtype=jnp.int32))
    tokens_BxTxN, mask_BxTxN, sampled_BxTxN, confidence_BxTxN = (
        jnp.swapaxes(x_TxBxN, 0, 1) for x_TxBxN in per_step
    )
    return Trajectory(
        tokens_BxTxN=tokens_BxTxN,
        mask_BxTxN=mask_BxTxN,
        sampled_BxTxN=sampled_BxTxN,
        confidence_BxTxN=confidence_BxTxN,
        initial_mask_BxN=state.mask_BxN,
        tokens_BxN=final.tokens_BxN,
    )


def sample_from_config(logits_fn: LogitsFn, tokens_BxN, mask_BxN, *, key, cfg, mask_id: int):
    """:func:`decode` with a :class:`~muse_mini.config.SamplerConfig`'s decoding fields.

    Guidance (``cfg.guidance``, ``cfg.guidance_schedule``) lives in the model
    wrapper: build ``logits_fn`` with :func:`muse_mini.decoding.guidance.from_config`.
    """
    return decode(
        logits_fn, tokens_BxN, mask_BxN, key=key, steps=cfg.steps, mask_id=mask_id,
        schedule=cfg.schedule, temperature=cfg.temperature, top_k=cfg.top_k,
        choice_temperature=cfg.choice_temperature,
    )
