"""Iterative parallel decoding (Muse §2.8; MaskGIT, Chang et al. 2022, Alg. 1).

Each step predicts every masked token, keeps the most confident and re-masks
the rest, following a schedule down to zero; unmasked positions are never
touched (inpainting, §3.3.1). The model is ``logits_fn(tokens_BxN, step)``,
which guidance wraps. One ``lax.scan`` returns every step.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.decoding import masking
from muse_mini.decoding.spec import DecodeSpec, check_key, check_scalars, check_top_k

__all__ = ["Trajectory", "decode", "decode_step", "init_state"]

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]


class DecodeState(NamedTuple):
    """What one decoding step (§2.8) hands the next: the tokens so far and which are still masked."""

    tokens_BxN: jax.Array  #: int32; still-masked positions hold ``mask_id``
    mask_BxN: jax.Array  #: bool; True where a token is still to be generated
    num_initial_B: jax.Array  #: int32; the schedule counts relative to this


class StepOutput(NamedTuple):
    """What one decoding step (§2.8) predicted, for the :class:`Trajectory`."""

    sampled_BxN: jax.Array  #: this step's prediction everywhere (fixed tokens copied)
    confidence_BxN: jax.Array  #: the score ranked at this step; +inf where already fixed


class Trajectory(eqx.Module):
    """The state after every step t of :func:`decode`, the step's full prediction and the score it ranked."""

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
        """True where a token became fixed at step t."""
        before_BxTxN = jnp.concatenate([self.initial_mask_BxN[:, None], self.mask_BxTxN[:, :-1]], axis=1)
        return before_BxTxN & ~self.mask_BxTxN

    @property
    def fixed_step_BxN(self) -> jax.Array:
        """The step at which each token got fixed; -1 for tokens given at the start."""
        # Masks only shrink, so a token fixed at step k was masked after steps 0..k-1.
        steps_masked_BxN = jnp.sum(self.mask_BxTxN, axis=1, dtype=jnp.int32)
        return jnp.where(self.initial_mask_BxN, steps_masked_BxN, -1)


def check_tokens(tokens_BxN, mask_BxN=None) -> None:
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
        raise ValueError(f"tokens and mask shapes differ: tokens {shape} vs mask {tuple(jnp.shape(mask_BxN))}")
    if jnp.result_type(mask_BxN) != jnp.bool_:
        raise ValueError(f"mask: expected dtype bool, got {jnp.result_type(mask_BxN)}")


def logits_width(logits_fn: LogitsFn, tokens_BxN) -> int:
    """V of ``logits_fn``'s ``BxNxV`` output, by abstract tracing (a [MASK] column is never sampled)."""
    step = jax.ShapeDtypeStruct((), jnp.int32)
    tokens = jax.ShapeDtypeStruct(jnp.shape(tokens_BxN), jnp.int32)
    out = jax.eval_shape(logits_fn, tokens, step)
    B, N = jnp.shape(tokens_BxN)
    if len(out.shape) != 3 or tuple(out.shape[:2]) != (B, N):
        raise ValueError(f"logits_fn: expected logits of shape ({B}, {N}, V), got {tuple(out.shape)}")
    return out.shape[-1]


def sample_tokens(logits_BxNxV, gumbel_BxNxV, *, temperature=1.0, top_k: int | None = None):
    """One token per position from ``softmax(logits / temperature)``, optionally top-k, by Gumbel-max.

    The noise is passed in so a step draws all its randomness in one call (RNG ops dominate CPU compile time).
    """
    if top_k == 1:  # exactly greedy, whatever the temperature
        return jnp.argmax(logits_BxNxV, axis=-1).astype(jnp.int32)
    if top_k is not None:
        kth_BxNx1 = jax.lax.top_k(logits_BxNxV, top_k)[0][..., -1:]
        logits_BxNxV = jnp.where(logits_BxNxV < kth_BxNx1, -jnp.inf, logits_BxNxV)
    return jnp.argmax(logits_BxNxV / temperature + gumbel_BxNxV, axis=-1).astype(jnp.int32)


@functools.lru_cache(maxsize=64)
def masked_count_table(schedule: str, steps: int, num_tokens: int) -> np.ndarray:
    """Entry ``[n, t]``: tokens still masked after step t when n were masked at the start (fewer than
    ``steps``: ``⌊n·γ((t+1)/steps)⌋``, without the one-per-step rule)."""
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
    tokens_BxN = jnp.asarray(tokens_BxN, jnp.int32)
    mask_BxN = jnp.asarray(mask_BxN, bool)
    return DecodeState(jnp.where(mask_BxN, mask_id, tokens_BxN), mask_BxN,
                       jnp.sum(mask_BxN, axis=-1, dtype=jnp.int32))


def choice_noise_scale(choice_temperature, step, steps: int, anneal: str = "maskgit"):
    """MaskGIT's ``choice_temperature · (1 − (step + 1) / steps)``, or aMUSEd's ``· (1 − step / (steps − 1))``;
    either way the last step ranks by confidence alone."""
    if anneal == "amused":
        return choice_temperature * (1.0 - step / max(steps - 1, 1))
    return choice_temperature * (1.0 - (step + 1) / steps)


def decode_step(logits_fn: LogitsFn, state: DecodeState, step, *, key, spec: DecodeSpec, temperature=1.0,
                choice_temperature=4.5) -> tuple[DecodeState, StepOutput]:
    """One step of §2.8: predict, sample, rank by confidence (the sampled token's untempered
    log-probability, as in MaskGIT), re-mask. ``key`` is the decode's; the step folds in its index."""
    step = jnp.asarray(step, jnp.int32)
    logits_BxNxV = predict_logits(logits_fn, state.tokens_BxN, step, spec.mask_id)
    B, N, V = logits_BxNxV.shape
    # Noise for sampling (V columns) and for the choice (one more), in one draw.
    gumbel_BxNxV1 = jax.random.gumbel(jax.random.fold_in(key, step), (B, N, V + 1))
    return _step_with_noise(logits_BxNxV, state, step, gumbel_BxNxV1, spec=spec, temperature=temperature,
                            choice_temperature=choice_temperature)


def _step_with_noise(logits_BxNxV, state: DecodeState, step, gumbel_BxNxV1, *, spec: DecodeSpec, temperature,
                     choice_temperature) -> tuple[DecodeState, StepOutput]:
    """:func:`decode_step` after the prediction, with its noise given (to compare with another sampler's step)."""
    B, N, V = logits_BxNxV.shape
    sampled_BxN = sample_tokens(logits_BxNxV, gumbel_BxNxV1[..., :V], temperature=temperature, top_k=spec.top_k)
    sampled_BxN = jnp.where(state.mask_BxN, sampled_BxN, state.tokens_BxN)

    logp_BxNxV = jax.nn.log_softmax(logits_BxNxV, axis=-1)
    logp_BxN = jnp.take_along_axis(logp_BxNxV, sampled_BxN[..., None], axis=-1)[..., 0]
    noise_scale = choice_noise_scale(choice_temperature, step, spec.steps, spec.choice_anneal)
    confidence_BxN = jnp.where(state.mask_BxN, logp_BxN + noise_scale * gumbel_BxNxV1[..., V], jnp.inf)

    table_CxT = jnp.asarray(masked_count_table(spec.schedule, spec.steps, N))
    num_masked_B = table_CxT[state.num_initial_B, step]
    # Never re-mask a fixed token, and leave nothing masked after the last step.
    num_masked_B = jnp.minimum(num_masked_B, jnp.sum(state.mask_BxN, axis=-1, dtype=jnp.int32))
    num_masked_B = jnp.where(step >= spec.steps - 1, 0, num_masked_B)

    # Fixed tokens sit at +inf, so only still-masked positions land among the lowest ranks.
    rank_BxN = jnp.argsort(jnp.argsort(confidence_BxN, axis=-1), axis=-1)
    mask_BxN = rank_BxN < num_masked_B[:, None]
    tokens_BxN = jnp.where(mask_BxN, spec.mask_id, sampled_BxN)
    return DecodeState(tokens_BxN, mask_BxN, state.num_initial_B), StepOutput(sampled_BxN, confidence_BxN)


def decode(logits_fn: LogitsFn, tokens_BxN, mask_BxN, *, key, spec: DecodeSpec, temperature=1.0,
           choice_temperature=4.5) -> Trajectory:
    """Generate the positions ``mask_BxN`` marks (all, for text-to-image) in ``spec.steps`` steps (§2.8).

    Each example follows the schedule from its own masked count. The checks see shapes only, so this jits.
    """
    check_key(key)
    check_scalars(temperature=temperature, choice_temperature=choice_temperature)
    check_tokens(tokens_BxN, mask_BxN)
    check_top_k(spec.top_k, min(logits_width(logits_fn, tokens_BxN), spec.mask_id))
    state = init_state(tokens_BxN, mask_BxN, spec.mask_id)

    def body(state, step):
        state, out = decode_step(logits_fn, state, step, key=key, spec=spec, temperature=temperature,
                                 choice_temperature=choice_temperature)
        return state, (state.tokens_BxN, state.mask_BxN, out.sampled_BxN, out.confidence_BxN)

    final, per_step = jax.lax.scan(body, state, jnp.arange(spec.steps, dtype=jnp.int32))
    tokens_BxTxN, mask_BxTxN, sampled_BxTxN, confidence_BxTxN = (jnp.swapaxes(x, 0, 1) for x in per_step)
    return Trajectory(tokens_BxTxN, mask_BxTxN, sampled_BxTxN, confidence_BxTxN, state.mask_BxN, final.tokens_BxN)
