"""Classifier-free guidance and negative prompts (Muse §2.7, eq. 1) with a fake model."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mini.config import SamplerConfig
from muse_mini.decoding.guidance import (
    BatchedModel, ConditionalLogits, GuidedLogits, classifier_free_guidance, from_config,
    guidance_scale, negative_prompt_context, unconditional_context,
)
from muse_mini.decoding.sampler import decode

B, N, V, L, D = 2, 4, 5, 3, 6
rng = np.random.default_rng(0)
W_NxV = rng.normal(size=(N, V)).astype(np.float32)
P_DxV = rng.normal(size=(D, V)).astype(np.float32)
TEXT = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)
TEXT_MASK = jnp.ones((B, L), bool).at[1, 2].set(False)
NEG_TEXT = jnp.asarray(rng.normal(size=(L, D)), jnp.float32)
TOKENS = jnp.asarray(rng.integers(0, V, (B, N)), jnp.int32)


def one_example(tokens_N, text_LxD, text_mask_L):
    """Logits from the position, the tokens and the masked mean of the text."""
    weights_L = text_mask_L / jnp.maximum(text_mask_L.sum(), 1)
    pooled_D = weights_L @ text_LxD
    return W_NxV + (pooled_D @ P_DxV)[None] + 0.1 * tokens_N[:, None]


class Recorder:
    """A batched model_fn that records the batch size of each call."""

    def __init__(self):
        self.batch_sizes = []
        self.inner = BatchedModel(one_example)

    def __call__(self, tokens_BxN, context):
        self.batch_sizes.append(tokens_BxN.shape[0])
        return self.inner(tokens_BxN, context)


def reference(context):
    return np.asarray(BatchedModel(one_example)(TOKENS, context))


COND = (TEXT, TEXT_MASK)


def test_eq1_matches_numpy_in_one_batched_call():
    model = Recorder()
    logits_fn = classifier_free_guidance(model, cond=COND, uncond=unconditional_context(COND),
                                         scale=3.0, schedule="constant", steps=4)
    guided = np.asarray(logits_fn(TOKENS, jnp.int32(1)))
    assert model.batch_sizes == [2 * B], "ℓc and ℓu must come from one forward pass of 2B"
    lc, lu = reference(COND), reference(unconditional_context(COND))
    np.testing.assert_allclose(guided, (1 + 3.0) * lc - 3.0 * lu, rtol=1e-5, atol=1e-5)
    assert not np.allclose(lc, lu)


def test_zero_guidance_is_exactly_the_conditional_logits():
    lc = reference(COND)
    skip = classifier_free_guidance(BatchedModel(one_example), cond=COND,
                                    uncond=unconditional_context(COND), scale=0.0, steps=4)
    assert isinstance(skip, ConditionalLogits)
    np.testing.assert_array_equal(skip(TOKENS, jnp.int32(2)), lc)
    traced = classifier_free_guidance(BatchedModel(one_example), cond=COND,
                                      uncond=unconditional_context(COND), scale=jnp.float32(0.0),
                                      schedule="constant", steps=4)
    assert isinstance(traced, GuidedLogits)
    np.testing.assert_array_equal(traced(TOKENS, jnp.int32(2)), lc)


def test_linear_ramp_values_and_first_step():
    np.testing.assert_allclose([guidance_scale(s, 5, 4.0, "linear") for s in range(5)], [0, 1, 2, 3, 4])
    np.testing.assert_allclose([guidance_scale(s, 3, 4.0, "constant") for s in range(3)], [4, 4, 4])
    assert float(guidance_scale(0, 1, 2.5, "linear")) == 2.5
    logits_fn = classifier_free_guidance(BatchedModel(one_example), cond=COND,
                                         uncond=unconditional_context(COND), scale=4.0,
                                         schedule="linear", steps=5)
    lc, lu = reference(COND), reference(unconditional_context(COND))
    np.testing.assert_array_equal(logits_fn(TOKENS, jnp.int32(0)), lc)
    np.testing.assert_allclose(logits_fn(TOKENS, jnp.int32(2)), 3.0 * lc - 2.0 * lu, rtol=1e-5, atol=1e-5)


def test_negative_prompt_replaces_the_unconditional_logits():
    negative = negative_prompt_context(COND, NEG_TEXT, jnp.ones((L,), bool))
    assert negative[0].shape == TEXT.shape and bool(negative[1].all())
    logits_fn = classifier_free_guidance(BatchedModel(one_example), cond=COND, uncond=negative,
                                         scale=2.0, schedule="constant", steps=4)
    lc, ln = reference(COND), reference(negative)
    np.testing.assert_allclose(logits_fn(TOKENS, jnp.int32(0)), 3.0 * lc - 2.0 * ln, rtol=1e-5, atol=1e-5)


def test_unconditional_context_keeps_lowres_tokens():
    lowres = jnp.arange(B * 3).reshape(B, 3)
    ctx = unconditional_context((lowres, TEXT, TEXT_MASK))
    np.testing.assert_array_equal(ctx[0], lowres)
    assert not np.asarray(ctx[1]).any() and ctx[1].shape == TEXT.shape
    assert ctx[2].dtype == jnp.bool_ and not np.asarray(ctx[2]).any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scale=float("nan")), r"guidance: expected a finite guidance scale"),
        (dict(scale=float("inf")), r"guidance"),
        (dict(scale="big"), r"guidance: expected a real number"),
        (dict(schedule="cosine"), r"guidance_schedule: expected one of \['constant', 'linear'\]"),
        (dict(steps=0), r"steps: expected an integer >= 1"),
        (dict(uncond=(TEXT[:1], TEXT_MASK[:1])), r"uncond: expected the structure and shapes"),
    ],
)
def test_argument_checks(kwargs, match):
    args = dict(cond=COND, uncond=unconditional_context(COND), scale=1.0, schedule="linear", steps=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        classifier_free_guidance(BatchedModel(one_example), **args)


def test_guided_decoding_compiles_once_for_any_scale_and_prompt():
    traces = []

    def model_fn(tokens_BxN, context):
        traces.append(tokens_BxN.shape)  # runs only when traced
        return BatchedModel(one_example)(tokens_BxN, context)

    run = eqx.filter_jit(decode)
    mask = jnp.ones((B, N), bool)
    results = []
    for scale, text in [(1.0, TEXT), (3.0, TEXT * 2)]:
        cfg = SamplerConfig(steps=3, guidance=scale, guidance_schedule="linear")
        logits_fn = from_config(model_fn, cond=(text, TEXT_MASK),
                                uncond=unconditional_context((text, TEXT_MASK)), cfg=cfg)
        traj = run(logits_fn, TOKENS, mask, key=jax.random.key(0, impl="rbg"), steps=3, mask_id=V)
        results.append(np.asarray(traj.tokens_BxN))
    assert (results[0] < V).all()
    # One trace for the output shape check, one for the compiled loop; none on the second call.
    assert len(traces) == 2 and all(shape == (2 * B, N) for shape in traces)
