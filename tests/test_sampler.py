"""Iterative parallel decoding (Muse §2.8) against fake, deterministic logits functions."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mini.decoding import masking
from muse_mini.config import SamplerConfig
from muse_mini.decoding.sampler import Trajectory, decode, decode_step, init_state, masked_count_table
from muse_mini.decoding.spec import DecodeSpec, sampler_scalars

V, N, B, STEPS = 8, 16, 3, 5
W_NxV = jnp.asarray(np.random.default_rng(42).normal(size=(N, V)) * 2.0, jnp.float32)
U_VxV = jnp.asarray(np.random.default_rng(7).normal(size=(V + 1, V)), jnp.float32)


def key(seed):
    # The sampler works with any key type; RBG keys compile far faster than the
    # default threefry on CPU, which keeps this file quick (threefry is checked
    # by tracing in test_default_threefry_keys_trace).
    return jax.random.key(seed, impl="rbg")


def table_logits(tokens_BxN, step):
    """Logits that depend only on the position: W[position]."""
    return jnp.broadcast_to(W_NxV, tokens_BxN.shape + (V,))


def context_logits(tokens_BxN, step):
    """Logits that also depend on the current tokens (incl. [MASK] = V) and the step."""
    return W_NxV + U_VxV[tokens_BxN].mean(axis=1, keepdims=True) + 0.1 * step


jit_decode = eqx.filter_jit(decode)
SPEC = DecodeSpec(steps=STEPS, mask_id=V)


def full_mask():
    return jnp.zeros((B, N), jnp.int32), jnp.ones((B, N), bool)


@pytest.fixture(scope="module")
def traj() -> Trajectory:
    return jit_decode(context_logits, *full_mask(), key=key(0), spec=SPEC)


def test_trajectory_shapes(traj):
    for name in ("tokens_BxTxN", "mask_BxTxN", "sampled_BxTxN", "confidence_BxTxN", "fixed_BxTxN"):
        assert getattr(traj, name).shape == (B, STEPS, N), name
    assert traj.tokens_BxN.shape == (B, N) and traj.fixed_step_BxN.shape == (B, N)
    assert traj.mask_BxTxN.dtype == jnp.bool_ and traj.tokens_BxN.dtype == jnp.int32
    assert traj.steps == STEPS


def test_everything_fixed_at_the_end(traj):
    assert not traj.mask_BxTxN[:, -1].any()
    assert (traj.tokens_BxN != V).all() and (traj.tokens_BxN >= 0).all()
    np.testing.assert_array_equal(traj.tokens_BxTxN[:, -1], traj.tokens_BxN)
    # Masked positions hold [MASK] in the state, and only those.
    np.testing.assert_array_equal(traj.tokens_BxTxN == V, traj.mask_BxTxN)


def test_fixed_tokens_never_change(traj):
    mask, tokens = np.asarray(traj.mask_BxTxN), np.asarray(traj.tokens_BxTxN)
    assert (mask[:, 1:] <= mask[:, :-1]).all(), "a fixed token was re-masked"
    for t in range(STEPS):
        fixed = ~mask[:, t]
        for later in range(t + 1, STEPS):
            np.testing.assert_array_equal(tokens[:, later][fixed], tokens[:, t][fixed])


def test_masked_count_follows_the_schedule(traj):
    expected = [masking.num_masked_after_step("cosine", t, STEPS, N) for t in range(STEPS)]
    np.testing.assert_array_equal(traj.mask_BxTxN.sum(-1), np.tile(expected, (B, 1)))


def test_fixed_at_step_bookkeeping(traj):
    fixed = np.asarray(traj.fixed_BxTxN)
    assert (fixed.sum(1) == 1).all(), "every token is fixed exactly once"
    np.testing.assert_array_equal(fixed.argmax(1), traj.fixed_step_BxN)
    counts = np.asarray(traj.mask_BxTxN.sum(-1))
    np.testing.assert_array_equal(fixed.sum(-1), np.diff(counts, prepend=N, axis=1) * -1)


def test_confidence_ranks_the_kept_tokens(traj):
    conf, mask = np.asarray(traj.confidence_BxTxN), np.asarray(traj.mask_BxTxN)
    masked_before = np.concatenate([np.ones((B, 1, N), bool), mask[:, :-1]], axis=1)
    np.testing.assert_array_equal(np.isposinf(conf), ~masked_before)
    fixed = np.asarray(traj.fixed_BxTxN)
    for b in range(B):
        for t in range(STEPS - 1):
            assert conf[b, t][fixed[b, t]].min() >= conf[b, t][mask[b, t]].max()


def test_partial_mask_keeps_given_tokens_and_counts_per_example():
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, V, (B, N)), jnp.int32)
    mask = jnp.zeros((B, N), bool).at[0, :6].set(True).at[1, 4:16].set(True).at[2, 5:7].set(True)
    traj = jit_decode(context_logits, tokens, mask, key=key(1), spec=SPEC)
    kept = ~np.asarray(mask)
    for t in range(STEPS):
        np.testing.assert_array_equal(np.asarray(traj.tokens_BxTxN[:, t])[kept], np.asarray(tokens)[kept])
    np.testing.assert_array_equal(traj.fixed_step_BxN == -1, kept)
    for b, n0 in enumerate(np.asarray(mask).sum(-1)):
        np.testing.assert_array_equal(traj.mask_BxTxN[b].sum(-1), masked_count_table("cosine", STEPS, N)[n0])
    np.testing.assert_array_equal(traj.mask_BxTxN[0].sum(-1), masking.masking_table("cosine", STEPS, 6))
    assert not traj.mask_BxTxN[:, -1].any()


def test_peaked_logits_and_tiny_temperature_give_the_argmax():
    peaked = lambda tokens, step: 10.0 * jax.nn.one_hot(jnp.argmax(table_logits(tokens, step), -1), V)
    traj = jit_decode(peaked, *full_mask(), key=key(5), spec=SPEC, temperature=1e-3)
    np.testing.assert_array_equal(traj.tokens_BxN, np.tile(np.argmax(W_NxV, -1), (B, 1)))


def test_top_k_one_is_greedy_at_every_step(traj):
    greedy = jit_decode(context_logits, *full_mask(), key=key(9), spec=DecodeSpec(STEPS, V, top_k=1))
    before = init_state(*full_mask(), V).tokens_BxN
    for t in range(STEPS):
        expected = np.argmax(jax.jit(context_logits)(before, t), -1)
        masked = np.asarray(before == V)
        np.testing.assert_array_equal(np.asarray(greedy.sampled_BxTxN[:, t])[masked], expected[masked])
        before = greedy.tokens_BxTxN[:, t]


def test_mask_column_is_never_sampled():
    def with_mask_column(tokens, step):  # V + 1 columns, [MASK] hugely favoured
        logits = table_logits(tokens, step)
        return jnp.concatenate([logits, jnp.full(logits.shape[:-1] + (1,), 100.0)], -1)

    traj = jit_decode(with_mask_column, *full_mask(), key=key(2), spec=DecodeSpec(steps=2, mask_id=V))
    assert (traj.sampled_BxTxN < V).all()


def test_the_whole_decode_is_one_loop_in_the_jaxpr():
    jaxpr = jax.make_jaxpr(
        lambda k: decode(context_logits, *full_mask(), key=k, spec=SPEC)
    )(key(0)).jaxpr
    loops = [e for e in jaxpr.eqns if e.primitive.name in ("scan", "while")]
    assert len(loops) == 1, [e.primitive.name for e in jaxpr.eqns]
    assert loops[0].params.get("length") == STEPS


def test_determinism_and_key_dependence(traj):
    again = jit_decode(context_logits, *full_mask(), key=key(0), spec=SPEC)
    other = jit_decode(context_logits, *full_mask(), key=key(1), spec=SPEC)
    np.testing.assert_array_equal(again.tokens_BxTxN, traj.tokens_BxTxN)
    assert not np.array_equal(other.tokens_BxN, traj.tokens_BxN)


def test_compiled_loop_equals_a_python_loop_of_decode_steps(traj):
    kwargs = dict(key=key(0), spec=SPEC, temperature=1.0, choice_temperature=4.5)
    step_fn = eqx.filter_jit(decode_step)
    state = init_state(*full_mask(), V)
    for t in range(STEPS):
        state, out = step_fn(context_logits, state, jnp.int32(t), **kwargs)
        np.testing.assert_array_equal(state.tokens_BxN, traj.tokens_BxTxN[:, t])
        np.testing.assert_allclose(out.confidence_BxN, traj.confidence_BxTxN[:, t], rtol=1e-5)


def test_a_sampler_configs_fields_reach_the_loop():
    """A SamplerConfig's static half (steps, schedule, top-k) and traced half (temperatures) both take effect."""
    cfg = SamplerConfig(steps=3, schedule="linear", temperature=0.5, top_k=2, choice_temperature=0.0)
    _, temperature, choice_temperature = sampler_scalars(cfg)
    traj = jit_decode(table_logits, *full_mask(), key=key(0), spec=DecodeSpec.from_sampler(cfg, V),
                      temperature=temperature, choice_temperature=choice_temperature)
    assert traj.steps == 3
    expected = [masking.num_masked_after_step("linear", t, 3, N) for t in range(3)]
    np.testing.assert_array_equal(traj.mask_BxTxN[0].sum(-1), expected)
    top2 = np.argsort(np.asarray(W_NxV), -1)[:, -2:]
    assert all(traj.tokens_BxN[0, n] in top2[n] for n in range(N))


TOKENS, MASK = jnp.zeros((B, N), jnp.int32), jnp.ones((B, N), bool)


@pytest.mark.parametrize(
    "override, match",
    [
        (dict(steps=0), r"steps: expected an integer >= 1, got 0"),
        (dict(steps=2.5), r"steps: expected an integer"),
        (dict(temperature=0.0), r"temperature: expected a finite number > 0"),
        (dict(temperature=float("nan")), r"temperature"),
        (dict(top_k=0), r"top_k: expected 1 <= top_k <= vocab size 8, got 0"),
        (dict(top_k=V + 1), r"top_k: .*vocab size 8"),
        (dict(choice_temperature=-1.0), r"choice_temperature: expected a finite number >= 0"),
        (dict(choice_temperature=float("inf")), r"choice_temperature"),
        (dict(schedule="nope"), r"schedule: unknown schedule 'nope'"),
        (dict(mask_id=0), r"mask_id"),
        (dict(mask=jnp.ones((B, N - 1), bool)), r"tokens \(3, 16\) vs mask \(3, 15\)"),
        (dict(mask=jnp.ones((B, N), jnp.int32)), r"mask: expected dtype bool"),
        (dict(tokens=jnp.zeros((B, 0), jnp.int32), mask=jnp.ones((B, 0), bool)), r"empty"),
        (dict(tokens=jnp.zeros((N,), jnp.int32), mask=jnp.ones((N,), bool)), r"tokens: expected shape"),
        (dict(tokens=jnp.zeros((B, N))), r"tokens: expected an integer dtype"),
        (dict(logits_fn=lambda t, s: jnp.zeros((N, V))), r"logits_fn: expected logits of shape"),
        (dict(key=0), r"key: expected one PRNG key such as jax.random.key\(0\), got 0"),
    ],
)
def test_argument_checks(override, match):
    kwargs = dict(logits_fn=table_logits, tokens=TOKENS, mask=MASK, key=key(0), steps=STEPS, mask_id=V)
    kwargs.update(override)
    spec_fields = {name: kwargs.pop(name) for name in ("steps", "mask_id", "schedule", "top_k") if name in kwargs}
    with pytest.raises(ValueError, match=match):
        spec = DecodeSpec(**spec_fields)
        decode(kwargs.pop("logits_fn"), kwargs.pop("tokens"), kwargs.pop("mask"), spec=spec, **kwargs)


def test_default_threefry_keys_trace():
    # Abstract evaluation only: compiling threefry costs seconds on CPU.
    out = jax.eval_shape(
        lambda k: decode(table_logits, *full_mask(), key=k, spec=DecodeSpec(2, V)), jax.random.key(0)
    )
    assert out.tokens_BxN.shape == (B, N)


def test_choice_anneal_amused_is_its_schedulers_linspace_and_maskgit_is_unchanged():
    """aMUSEd's scheduler scales the confidence noise by linspace(c, 0, T): full at the first step, 0 at the last;
    MaskGIT's starts one step lower. An unknown anneal is refused by name."""
    from muse_mini.decoding.sampler import choice_noise_scale
    from muse_mini.decoding.spec import DecodeSpec

    steps = np.arange(12)
    np.testing.assert_allclose(choice_noise_scale(2.0, steps, 12, "amused"), np.linspace(2.0, 0.0, 12), atol=1e-12)
    np.testing.assert_allclose(choice_noise_scale(2.0, steps, 12), 2.0 * (1 - (steps + 1) / 12), atol=1e-12)
    with pytest.raises(ValueError, match="choice_anneal: expected one of"):
        DecodeSpec(steps=4, mask_id=8, choice_anneal="cosine")
