"""Notebook 03's exercises: guidance (§2.7, eq. 1) and one step of parallel decoding (§2.8),
checked against :mod:`muse_mini.decoding.guidance`, :mod:`~muse_mini.decoding.masking` and
:func:`muse_mini.decoding.sampler.decode_step`."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.course.checking import Exercise, Wrong, describe, diagnose, expect_shape, run_check, to_array
from muse_mini.decoding import guidance, masking, sampler
from muse_mini.decoding.spec import DecodeSpec

__all__ = ["check_guided_logits", "check_guidance_scale", "check_tokens_kept", "check_tokens_to_remask", "EXERCISES"]

_EQ1 = "ℓg = (1 + t)·ℓc − t·ℓu = ℓc + t·(ℓc − ℓu) (eq. 1)"


_library_guidance = jax.jit(guidance.apply_guidance)


def check_guided_logits(fn):
    """``guided_logits(cond, uncond_or_negative, t)``: eq. 1, moving away from the unconditional
    (or negative-prompt) logits by the guidance scale ``t`` (§2.7)."""

    def body(learner):
        for seed, (shape, t) in enumerate([((2, 7, 9), 3.0), ((1, 4, 5), 0.5), ((3, 16, 8), 4.5), ((2, 5, 6), 0.0)]):
            rng = np.random.default_rng(seed)
            cond, uncond = (jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(2))
            call = describe("guided_logits", cond=cond, uncond=uncond, t=t)
            out = to_array(learner(cond, uncond, t, call=call), call)
            expect_shape(out, shape, call, "eq. 1 is elementwise: the logits' shape stays")
            c, u = np.asarray(cond, np.float64), np.asarray(uncond, np.float64)
            diagnose(out, _library_guidance(cond, uncond, t), call, [
                ((1 - t) * c + t * u, "the guidance sign is flipped",
                 "eq. 1 moves AWAY from the unconditional logits: ℓc + t·(ℓc − ℓu)"),
                (t * c + (1 - t) * u, "you interpolated between ℓu and ℓc", "eq. 1 extrapolates past ℓc: " + _EQ1),
                (t * (c - u), "ℓc itself is missing", "at t = 0 guidance must give ℓc unchanged: " + _EQ1),
                ((1 + t) * c + t * u, "the unconditional term has the wrong sign", "(1 + t)·ℓc MINUS t·ℓu"),
                ((1 + t) * c - u, "t must scale ℓu too", _EQ1),
                (u + t * (u - c), "ℓc and ℓu are swapped", _EQ1),
            ], hint=_EQ1, what="logits")

    return run_check("guided_logits", fn, body)


def check_guidance_scale(fn):
    """``guidance_scale(step, steps, t_max) -> t``: 0 at the first step, rising linearly to ``t_max`` at the last (§2.7)."""

    def body(learner):
        cases = [(5, 12, 3.0), (0, 12, 3.0), (11, 12, 3.0), (3, 8, 4.5), (7, 24, 2.0), (1, 2, 5.0), (0, 1, 3.0)]
        for step, steps, t_max in cases:
            call = f"guidance_scale(step={step}, steps={steps}, t_max={t_max})"
            edge = ("with steps = 1 the single step uses t_max (there is nothing to ramp over); "
                    "avoid dividing by steps − 1 = 0" if steps == 1 else "")
            out = to_array(learner(step, steps, t_max, call=call, hint=edge or None), call, what="a number")
            expect_shape(out, (), call, "return one number, the scale at this step")
            want = guidance.guidance_scale(step, steps, t_max, "linear")
            diagnose(out, want, call, [
                (t_max * step / steps, "off by one: the last step (step = steps − 1) must reach t_max",
                 "divide by steps − 1: step counts from 0 to steps − 1"),
                (t_max * (step + 1) / steps, "off by one: at step 0 the scale must be 0",
                 "§2.7 samples the first tokens with no guidance: t = t_max · step / (steps − 1)"),
                (t_max, "the scale is constant", "§2.7 raises t linearly through the sampling, from 0 to t_max"),
                (t_max * (1 - step / max(steps - 1, 1)), "the ramp runs backwards",
                 "rise from 0 at the first step to t_max at the last"),
            ], hint=edge or "t = t_max · step / (steps − 1)", what="scales")

    return run_check("guidance_scale", fn, body)


def _plain_kept(step: int, steps: int, n: int) -> int:
    return n - math.floor(n * math.cos(math.pi / 2 * (step + 1) / steps))


# The first cases follow N − ⌊N·γ⌋; the last need the library's "one more token each step".
KEPT_CASES = [(5, 12, 256), (0, 12, 256), (11, 12, 256), (3, 8, 64), (0, 24, 256), (10, 24, 256), (6, 8, 1024),
              (0, 1, 16), (1, 12, 16), (3, 64, 256), (4, 10, 10)]


def check_tokens_kept(fn):
    """``tokens_kept(step, steps, num_tokens) -> int``: tokens unmasked after 0-based ``step`` of the cosine
    schedule (§2.8), as ``masking.masking_table`` counts them."""

    def body(learner):
        for step, steps, n in KEPT_CASES:
            call = f"tokens_kept(step={step}, steps={steps}, num_tokens={n})"
            out = to_array(learner(step, steps, n, call=call), call, what="an int")
            expect_shape(out, (), call, "return one count")
            want = n - int(masking.num_masked_after_step("cosine", step, steps, n))
            gamma = math.cos(math.pi / 2 * (step + 1) / steps)
            if abs(float(out) - want) == 1 and abs(n * gamma - round(n * gamma)) < 1e-6:
                continue  # N·γ is a whole number: floor may land either side of it
            diagnose(out, want, call, [
                (_plain_kept(step, steps, n), "the library also reveals at least one more token at every step",
                 "kept after a step is at least kept after the step before plus one (so each step decodes a token)"),
                (n - math.floor(n * math.cos(math.pi / 2 * step / steps)), "off by one in the step",
                 "step is 0-based, and after step 0 some tokens are already kept: the ratio is (step + 1) / steps"),
                (math.floor(n * gamma), "you returned the number still MASKED", "kept = num_tokens − masked"),
                (n - math.ceil(n * gamma), "you rounded the masked count up (or the kept count down)",
                 "⌊N·γ⌋ tokens stay masked, so kept = N − ⌊N·γ⌋"),
                (n - math.floor(n * (1 - (step + 1) / steps)), "that is the linear schedule",
                 "§2.8 uses the cosine schedule γ(r) = cos(π/2 · r)"),
            ], what="counts", atol=0.0, rtol=0.0, hint="kept = N − ⌊N · cos(π/2 · (step + 1) / steps)⌋")

    return run_check("tokens_kept", fn, body)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _library_step(table_NxV, tokens_BxN, mask_BxN, key, steps: int, step: int):
    """The confidences ``decode_step`` ranked and the positions it re-masked, for a fixed random "model"."""
    batch, (n, vocab) = tokens_BxN.shape[0], table_NxV.shape

    def logits_fn(tokens_BxN, step):
        return jnp.broadcast_to(table_NxV, (batch, n, vocab))

    state = sampler.init_state(tokens_BxN, mask_BxN, vocab)
    new, out = sampler.decode_step(logits_fn, state, step, key=key, spec=DecodeSpec(steps=steps, mask_id=vocab))
    return out.confidence_BxN, new.mask_BxN


def _library_cases(seed: int, batch: int, n: int, steps: int, step: int):
    rng = np.random.default_rng(seed)
    table = jnp.asarray(3.0 * rng.normal(size=(n, 11)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, 11, (batch, n)), jnp.int32)
    mask = jnp.asarray(rng.uniform(size=(batch, n)) < 0.8)
    confidence, new_mask = (np.asarray(x) for x in _library_step(table, tokens, mask, jax.random.key(seed), steps, step))
    return [(confidence[b], int(new_mask[b].sum()), new_mask[b]) for b in range(batch)]


def _remask_cases():
    """``(confidence_N, n, library's mask or None)``: synthetic cases (ties, +inf, n = 0), then decode_step's."""
    rng = np.random.default_rng(3)
    conf = rng.normal(size=10)
    fixed = rng.normal(size=16)
    fixed[[1, 4, 5, 9, 12]] = np.inf  # already decoded: never re-masked
    ties = np.array([0.5, -1.0, 0.5, 2.0, -1.0, 0.5, 3.0])
    cases = [(conf, 3, None), (fixed, 6, None), (np.array([0.3]), 1, None), (np.array([0.3, -0.2]), 0, None),
             (ties, 3, None), (conf, 10, None)]
    yield from cases
    yield from _library_cases(7, 3, 16, 8, 1)  # compiled once: after the quick cases have caught most mistakes


def check_tokens_to_remask(fn):
    """``tokens_to_remask(confidence_N, n) -> bool_N``: True at the ``n`` least confident positions, the ones
    :func:`~muse_mini.decoding.sampler.decode_step` masks again (§2.8); a tie may be broken either way."""

    def body(learner):
        for confidence, n, library_mask in _remask_cases():
            conf = jnp.asarray(confidence, jnp.float32)
            call = describe("tokens_to_remask", confidence_N=conf, n=n)
            out = to_array(learner(conf, n, call=call), call, what="a boolean mask")
            if out.shape == (n,) and np.issubdtype(out.dtype, np.integer) and n != len(confidence):
                raise Wrong(f"{call} returned {n} indices", "return a boolean mask of shape (N,): True where "
                                                            "re-masked (e.g. rank < n)")
            expect_shape(out, confidence.shape, call, "one boolean per position")
            if out.dtype != np.bool_:
                raise Wrong(f"{call} returned dtype {out.dtype}", "return booleans (a comparison such as rank < n)")
            _judge_remask(out, np.asarray(confidence), n, library_mask, call)

    return run_check("tokens_to_remask", fn, body)


def _judge_remask(out, confidence, n, library_mask, call):
    if out.sum() != n:
        raise Wrong(f"{call} re-masked {int(out.sum())} tokens, expected n = {n}", "exactly the n lowest confidences")
    if n == 0 or n == len(confidence):
        return
    chosen, kept = confidence[out], confidence[~out]
    if chosen.max() <= kept.min():
        if library_mask is not None and not np.array_equal(out, library_mask) and len(set(confidence)) == len(confidence):
            raise Wrong(f"{call} differs from decode_step's choice", "re-mask the n lowest confidences")
        return  # the n least confident (ties either way)
    lowest_n = confidence.argsort()[:n]
    if chosen.min() >= kept.max():
        raise Wrong(f"{call}: you re-masked the MOST confident tokens (kept the least confident)",
                    "re-mask the n LOWEST confidences: argsort ascending, the first n")
    if np.isinf(chosen).any():
        raise Wrong(f"{call} re-masked a token fixed at an earlier step (confidence +inf)",
                    "re-mask the n LOWEST confidences: argsort ascending, the first n")
    raise Wrong(f"{call} re-masked confidence {chosen.max():.3g} but kept {kept.min():.3g}",
                f"re-mask the n lowest confidences (here positions {sorted(lowest_n.tolist())})")


EXERCISES = (
    Exercise("03", "guided_logits", check_guided_logits, "§2.7",
             "eq. 1: (1 + t)·ℓc − t·ℓu, ℓu unconditional or a negative prompt's logits"),
    Exercise("03", "guidance_scale", check_guidance_scale, "§2.7",
             "the linearly rising scale: 0 at step 0, t_max at step steps − 1 (t_max when steps = 1)"),
    Exercise("03", "tokens_kept", check_tokens_kept, "§2.8",
             "tokens unmasked after 0-based step: N − ⌊N·cos(π/2·(step + 1)/steps)⌋, at least one more each step"),
    Exercise("03", "tokens_to_remask", check_tokens_to_remask, "§2.8",
             "a boolean mask of the n least confident positions, to be masked again"),
)
