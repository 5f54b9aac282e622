"""Classifier-free guidance (Muse §2.7, eq. 1) and the guided decodings, with a fake model."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mini.config import EditConfig, SamplerConfig
from muse_mini.decoding.guidance import (
    classifier_free_guidance, decode_guided, edit_guided, guidance_scale, guided_contexts, unconditional_context,
)
from muse_mini.decoding.spec import DecodeSpec

B, N, V, L, D = 2, 4, 5, 3, 6
rng = np.random.default_rng(0)
W_NxV = rng.normal(size=(N, V)).astype(np.float32)
P_DxV = rng.normal(size=(D, V)).astype(np.float32)
TEXT = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)
TEXT_MASK = jnp.ones((B, L), bool).at[1, 2].set(False)
NEG_TEXT = jnp.asarray(rng.normal(size=(L, D)), jnp.float32)
TOKENS = jnp.asarray(rng.integers(0, V, (B, N)), jnp.int32)
CALLS = {"encode": 0, "logits": 0}  # Python-level calls: under jit, traces


class FakeModel(eqx.Module):
    """A transformer's decoding interface: ``encode_condition`` once, ``logits`` at every step."""

    seq_len: int = eqx.field(static=True, default=N)
    mask_id: int = eqx.field(static=True, default=V)

    def encode_condition(self, text_LxD, text_mask_L):
        CALLS["encode"] += 1
        weights_L = text_mask_L / jnp.maximum(text_mask_L.sum(), 1)
        return weights_L @ text_LxD  # the masked mean of the text

    def logits(self, tokens_N, pooled_D):
        CALLS["logits"] += 1
        return W_NxV + (pooled_D @ P_DxV)[None] + 0.1 * tokens_N[:, None]


MODEL = FakeModel()
COND = (TEXT, TEXT_MASK)


def reference(context):
    """ℓ for ``context``, one example at a time, in NumPy terms."""
    return np.stack([np.asarray(MODEL.logits(TOKENS[b], MODEL.encode_condition(context[0][b], context[1][b])))
                     for b in range(B)])


def guided(scale, schedule="constant", steps=4, uncond=None):
    uncond = unconditional_context(COND) if uncond is None else uncond
    spec = DecodeSpec(steps=steps, mask_id=V, guidance_schedule=schedule)
    return classifier_free_guidance(MODEL, COND, uncond, scale=scale, spec=spec)


def test_eq1_matches_numpy_with_one_model_call():
    logits_fn = guided(3.0)
    CALLS["logits"] = 0
    out = np.asarray(logits_fn(TOKENS, jnp.int32(1)))
    assert CALLS["logits"] == 1, "ℓc and ℓu must come from one model call on the 2B batch"
    lc, lu = reference(COND), reference(unconditional_context(COND))
    np.testing.assert_allclose(out, (1 + 3.0) * lc - 3.0 * lu, rtol=1e-5, atol=1e-5)
    assert not np.allclose(lc, lu)


def test_zero_guidance_is_exactly_the_conditional_logits():
    np.testing.assert_array_equal(guided(0.0)(TOKENS, jnp.int32(2)), guided(0.0, "linear")(TOKENS, jnp.int32(2)))
    np.testing.assert_allclose(guided(0.0)(TOKENS, jnp.int32(2)), reference(COND), rtol=1e-6, atol=1e-6)


def test_the_condition_is_encoded_once_not_at_every_step():
    CALLS["encode"] = 0
    logits_fn = guided(2.0)
    encoded = CALLS["encode"]
    for step in range(3):
        logits_fn(TOKENS, jnp.int32(step))
    assert encoded == 2 and CALLS["encode"] == encoded  # cond and uncond, each vmapped once


def test_linear_ramp_values_and_first_step():
    np.testing.assert_allclose([guidance_scale(s, 5, 4.0, "linear") for s in range(5)], [0, 1, 2, 3, 4])
    np.testing.assert_allclose([guidance_scale(s, 3, 4.0, "constant") for s in range(3)], [4, 4, 4])
    assert float(guidance_scale(0, 1, 2.5, "linear")) == 2.5
    logits_fn = guided(4.0, "linear", steps=5)
    lc, lu = reference(COND), reference(unconditional_context(COND))
    np.testing.assert_allclose(logits_fn(TOKENS, jnp.int32(0)), lc, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logits_fn(TOKENS, jnp.int32(2)), 3.0 * lc - 2.0 * lu, rtol=1e-5, atol=1e-5)


def test_negative_prompt_replaces_the_unconditional_logits():
    context, negative = guided_contexts(COND, (NEG_TEXT[None], jnp.ones((1, L), bool)))
    assert context is COND and negative[0].shape == TEXT.shape and bool(negative[1].all())
    np.testing.assert_array_equal(negative[0][1], NEG_TEXT)  # the one negative prompt serves every row
    lc, ln = reference(COND), reference(negative)
    np.testing.assert_allclose(guided(2.0, uncond=negative)(TOKENS, jnp.int32(0)), 3.0 * lc - 2.0 * ln,
                               rtol=1e-5, atol=1e-5)


def test_unconditional_context_keeps_lowres_tokens():
    lowres = jnp.arange(B * 3).reshape(B, 3)
    ctx = unconditional_context((lowres, TEXT, TEXT_MASK))
    np.testing.assert_array_equal(ctx[0], lowres)
    assert not np.asarray(ctx[1]).any() and ctx[1].shape == TEXT.shape
    assert ctx[2].dtype == jnp.bool_ and not np.asarray(ctx[2]).any()
    assert guided_contexts((lowres, TEXT, TEXT_MASK))[1][0] is lowres


@pytest.mark.parametrize("sampler, match", [
    (SamplerConfig(steps=3, guidance=float("nan")), r"guidance: expected a finite number"),
    (SamplerConfig(steps=3, guidance="big"), r"guidance: expected a real number"),
    (SamplerConfig(steps=3, guidance_schedule="cosine"), r"guidance_schedule: expected one of \['constant', 'linear'\]"),
    (SamplerConfig(steps=0), r"steps: expected an integer >= 1"),
    (SamplerConfig(steps=3, top_k=V + 1), r"top_k: expected 1 <= top_k <= vocab size 5"),
])
def test_decode_guided_checks_the_sampler_once_on_the_host(sampler, match):
    with pytest.raises(ValueError, match=match):
        decode_guided(MODEL, *guided_contexts(COND), jax.random.key(0, impl="rbg"), sampler)


def test_other_argument_checks():
    with pytest.raises(ValueError, match=r"uncond: expected the structure and shapes of the context"):
        guided(1.0, uncond=(TEXT[:1], TEXT_MASK[:1]))
    with pytest.raises(ValueError, match=r"tokens_BxN, mask_BxN: give both"):
        decode_guided(MODEL, *guided_contexts(COND), jax.random.key(0), SamplerConfig(steps=2), tokens_BxN=TOKENS)
    with pytest.raises(ValueError, match=r"tokens_BxN: the model takes 4 tokens per map, got 3"):
        decode_guided(MODEL, *guided_contexts(COND), jax.random.key(0), SamplerConfig(steps=2),
                      tokens_BxN=TOKENS[:, :3], mask_BxN=jnp.ones((B, 3), bool))


def test_guided_decoding_compiles_once_for_any_scale_prompt_and_temperature():
    key = jax.random.key(0, impl="rbg")
    results = []
    for scale, text, temperature in [(1.0, TEXT, 1.0), (3.0, TEXT * 2, 0.5)]:
        before = CALLS["logits"]
        sampler = SamplerConfig(steps=3, guidance=scale, temperature=temperature)
        traj = decode_guided(MODEL, *guided_contexts((text, TEXT_MASK)), key, sampler)
        results.append((np.asarray(traj.tokens_BxN), CALLS["logits"] - before))
    assert (results[0][0] < V).all() and results[0][0].shape == (B, N)
    # One trace for the output width check, one for the scanned step; none on the second call.
    assert results[0][1] == 2 and results[1][1] == 0


def test_a_partly_known_map_keeps_its_tokens():
    """The inpainting state (§3.3.1): given tokens stay, masked ones are generated."""
    mask = jnp.zeros((B, N), bool).at[:, 1:3].set(True)
    traj = decode_guided(MODEL, *guided_contexts(COND), jax.random.key(1, impl="rbg"),
                         SamplerConfig(steps=2, guidance=2.0), tokens_BxN=TOKENS, mask_BxN=mask)
    out = np.asarray(traj.tokens_BxN)
    np.testing.assert_array_equal(out[~np.asarray(mask)], np.asarray(TOKENS)[~np.asarray(mask)])
    assert (out < V).all() and np.array_equal(traj.initial_mask_BxN, mask)


def test_edit_guided_runs_the_walk_with_constant_guidance():
    key = jax.random.key(2, impl="rbg")
    edit = EditConfig(iterations=5, resample_fraction=0.5, top_k=1, guidance=3.0)
    traj = edit_guided(MODEL, *guided_contexts(COND), TOKENS, key, edit)
    assert traj.tokens_BxIxN.shape == (B, 5, N) and (np.asarray(traj.resampled_BxIxN).sum(-1) == 2).all()
    # top-1 under constant guidance 3: each resampled token is the argmax of eq. 1 at t = 3, given the rest
    tokens = np.asarray(TOKENS)
    logits_fn = guided(3.0)
    for i in range(5):
        chosen = np.asarray(traj.resampled_BxIxN[:, i])
        masked = np.where(chosen, V, tokens)
        best = np.argmax(np.asarray(logits_fn(jnp.asarray(masked), jnp.int32(i)))[..., :V], -1)
        tokens = np.where(chosen, best, tokens)
        np.testing.assert_array_equal(tokens, traj.tokens_BxIxN[:, i])
