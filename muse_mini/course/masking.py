"""Notebook 02's exercises: the base model's training signal, checked against
:mod:`muse_mini.decoding.masking` (§2.6) and :func:`muse_mini.training.losses.masked_cross_entropy` (§2.3)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.course.checking import Exercise, Wrong, describe, diagnose, expect_shape, run_check, to_array
from muse_mini.decoding import masking
from muse_mini.decoding.masking import sample_mask_rate
from muse_mini.training.losses import masked_cross_entropy

__all__ = ["check_mask_rate", "check_num_masked", "check_masked_loss", "EXERCISES"]

_RATE_HINT = "r = cos(π/2 · u), the inverse of the arccos CDF F(r) = 1 − (2/π)·arccos(r) (up to u ↔ 1 − u)"


@functools.partial(jax.jit, static_argnums=1)
def _library_rates(key, shape):
    """The uniform ``u`` the library draws from ``key``, and the rates it makes of them."""
    return jax.random.uniform(key, shape), sample_mask_rate(key, shape)


def check_mask_rate(fn):
    """``mask_rate(u) -> r``: uniform ``u ∈ [0, 1)`` to the arccos-distributed masking rate (§2.6)."""

    def body(learner):
        note = None
        learner.probe(jnp.zeros(3))
        for seed, shape in enumerate([(), (7,), (3, 5)]):
            u, want = _library_rates(jax.random.key(seed), shape)
            call = describe("mask_rate", u=u) if shape else f"mask_rate(u={float(u):.4f})"
            out = to_array(learner(u, call=call), call)
            expect_shape(out, shape, call, "work elementwise: one rate per entry of u")
            uu = np.asarray(u, np.float64)
            if np.allclose(out, np.sin(0.5 * np.pi * uu), rtol=1e-4, atol=1e-5) and not np.allclose(out, want):
                note = "sin(π/2 · u) equals the library's cos(π/2 · u) in distribution: 1 − u is uniform too"
                continue
            diagnose(out, want, call, [
                (uu, "you returned u itself, a uniform rate",
                 "§2.6 draws r from the arccos density, biased to high rates: " + _RATE_HINT),
                (1 - uu, "you returned 1 − u, a uniform rate", _RATE_HINT),
                (np.arccos(uu), "arccos(u) is not the rate (it is not even in [0, 1])", _RATE_HINT),
                (1 - 2 / np.pi * np.arccos(uu), "you applied the CDF, not its inverse",
                 "solve u = F(r) for r: " + _RATE_HINT),
                (2 / np.pi * np.arccos(uu), "you applied (one minus) the CDF, not its inverse",
                 "solve u = F(r) for r: " + _RATE_HINT),
                (np.cos(np.pi * uu), "cos(π·u) runs over [−1, 1]", "a quarter turn: cos(π/2 · u)"),
                (np.cos(uu), "the angle is missing its π/2", "cos(π/2 · u)"),
            ], hint=_RATE_HINT, what="rates")
        return note

    return run_check("mask_rate", fn, body)


def _rates():
    """Rates ordered so rounding mistakes show before the edge cases; none lands near an integer count."""
    cases = [(0.37, 256), (0.2, 9), (0.9, 7), (0.5, 256), (0.999, 256), (0.01, 16)]
    rng = np.random.default_rng(2)
    for n in (16, 64, 1024):
        for r in rng.uniform(0, 1, 4):
            if abs(r * n - round(r * n)) > 1e-3:
                cases.append((float(round(r, 6)), n))
    return cases + [(1.0, 16), (0.63, 1), (0.0, 16), (0.0, 256)]


def check_num_masked(fn):
    """``num_masked(rate, num_tokens) -> int``: ``⌈rate·N⌉`` clipped to ``[1, N]``, as the library masks (§2.6)."""

    def body(learner):
        for rate, n in _rates():
            call = f"num_masked(rate={rate}, num_tokens={n})"
            out = to_array(learner(rate, n, call=call), call, what="an int")
            expect_shape(out, (), call, "return one number of tokens")
            if not np.isfinite(out) or float(out) != round(float(out)):
                raise Wrong(f"{call} returned {float(out):.6g}, not a whole number of tokens",
                            "round UP with math.ceil (or jnp.ceil) and return an int")
            want = int(masking.num_to_mask(jnp.float32(rate), n))
            diagnose(out, want, call, [
                (math.ceil(rate * n), "rate 0 masks no token here",
                 "clip to [1, N]: every training example has at least one masked token to predict"),
                (math.floor(rate * n), "you rounded down", "round UP: ⌈r·N⌉, so every rate > 0 masks a token"),
                (round(rate * n), "you rounded to the nearest integer", "round UP: ⌈r·N⌉"),
                (n - math.ceil(rate * n), "you returned the number of tokens KEPT", "the rate is the masked fraction"),
            ], what="counts", atol=0.0, rtol=0.0)

    return run_check("num_masked", fn, body)


def _loss_inputs(seed: int, batch: int, n: int, vocab: int):
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.normal(size=(batch, n, vocab))
    targets = rng.integers(0, vocab, (batch, n))
    # Rows masked at different rates, so per-row and whole-batch averages differ; at least one per row.
    mask = rng.uniform(size=(batch, n)) < np.linspace(0.2, 0.9, batch)[:, None]
    mask[:, 0] = True
    return jnp.asarray(logits, jnp.float32), jnp.asarray(targets, jnp.int32), jnp.asarray(mask)


def _loss_mistakes(logits, targets, mask):
    """``(wrong loss, what, hint)`` for the common mistakes, from the per-token cross-entropy."""
    raw = np.asarray(logits, np.float64)
    logp = raw - raw.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    t = np.asarray(targets)[..., None]
    ce = -np.take_along_axis(logp, t, -1)[..., 0]
    m = np.asarray(mask, np.float64)
    return [
        (ce.mean(), "you averaged over every token, masked or not",
         "only masked positions count: sum(ce · mask) / sum(mask)"),
        ((ce * m).sum() / m.size, "you divided by all B·N tokens", "divide by the number of masked tokens, mask.sum()"),
        ((ce * m).sum(), "you summed instead of averaging", "divide by the number of masked tokens, mask.sum()"),
        ((ce * (1 - m)).sum() / (1 - m).sum(), "you scored the UNMASKED tokens",
         "the model predicts the masked ones: weight by mask, not by ~mask"),
        (((ce * m).sum(1) / m.sum(1)).mean(), "you averaged each row, then the rows",
         "average over all masked tokens of the batch at once: sum(ce · mask) / sum(mask)"),
        (-(np.take_along_axis(raw, t, -1)[..., 0] * m).sum() / m.sum(), "you used the raw logit, not its log-probability",
         "cross-entropy is −log_softmax(logits)[target]"),
        (-(ce * m).sum() / m.sum(), "the loss has the wrong sign", "cross-entropy is MINUS the log-probability"),
    ]


@jax.jit
def _library_loss(logits_BxNxV, targets_BxN, mask_BxN):
    return masked_cross_entropy(logits_BxNxV, targets_BxN, mask_BxN)[0]


def check_masked_loss(fn):
    """``masked_loss(logits_BxNxV, targets_BxN, mask_BxN) -> scalar``: cross-entropy on masked tokens only (§2.3)."""

    def body(learner):
        for seed, (batch, n, vocab) in enumerate([(1, 4, 5), (3, 9, 7)]):
            logits, targets, mask = _loss_inputs(seed, batch, n, vocab)
            call = describe("masked_loss", logits_BxNxV=logits, targets_BxN=targets, mask_BxN=mask)
            out = to_array(learner(logits, targets, mask, call=call), call, what="a scalar loss")
            expect_shape(out, (), call, "average into one number for the whole batch")
            want = _library_loss(logits, targets, mask)
            diagnose(out, want, call, _loss_mistakes(logits, targets, mask),
                     hint="mean over masked positions of −log_softmax(logits)[target]", what="the loss")

    return run_check("masked_loss", fn, body)


EXERCISES = (
    Exercise("02", "mask_rate", check_mask_rate, "§2.6",
             "map uniform u in [0, 1) to a masking rate with the arccos density (invert its CDF)"),
    Exercise("02", "num_masked", check_num_masked, "§2.6",
             "how many of num_tokens a rate masks: ⌈rate · N⌉, at least 1 and at most N"),
    Exercise("02", "masked_loss", check_masked_loss, "§2.3",
             "mean cross-entropy over the masked positions only (the unmasked ones are given)"),
)
