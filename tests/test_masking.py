"""Arccos masking rates and decoding schedules (Muse §2.6, §2.8)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from muse_mini.decoding import masking


def key(seed):
    # RBG keys compile far faster than threefry on CPU; the KS test below keeps the default.
    return jax.random.key(seed, impl="rbg")


def test_arccos_sampler_matches_analytic_cdf():
    rates = np.asarray(masking.sample_mask_rate(jax.random.key(0), (20_000,)), np.float64)
    assert rates.min() >= 0.0 and rates.max() <= 1.0
    result = scipy.stats.kstest(rates, lambda r: np.asarray(masking.arccos_cdf(r), np.float64))
    assert result.pvalue > 0.01, result
    # E[r] = 2/π ≈ 0.64 (§2.6); the standard error here is about 0.002.
    assert abs(rates.mean() - 2 / math.pi) < 0.01


def test_arccos_cdf_values():
    cdf = masking.arccos_cdf(jnp.array([0.0, math.sin(math.pi / 4), 1.0]))
    np.testing.assert_allclose(cdf, [0.0, 0.5, 1.0], atol=1e-6)


def test_random_mask_count_is_ceil_rate_n_and_at_least_one():
    rates = jnp.array([0.0, 1e-6, 0.3, 0.5, 0.64, 0.999, 1.0])
    keys = jax.random.split(key(1), len(rates))
    for num_tokens in (1, 17, 256):
        masks = jax.jit(jax.vmap(masking.random_mask, in_axes=(0, None, 0)), static_argnums=1)(
            keys, num_tokens, rates
        )
        for rate, mask in zip(np.asarray(rates), np.asarray(masks)):
            expected = min(max(math.ceil(rate * num_tokens), 1), num_tokens)
            assert mask.sum() == expected, (rate, num_tokens)


def test_random_mask_positions_are_uniform():
    # 4000 masks of 3 out of 12: each position is masked with probability 1/4.
    keys = jax.random.split(key(2), 4000)
    masks = jax.jit(jax.vmap(lambda k: masking.random_mask(k, 12, 0.25)))(keys)
    counts = np.asarray(masks).sum(0)
    assert scipy.stats.chisquare(counts).pvalue > 0.001


def test_mask_tokens_replaces_only_masked_positions():
    tokens = jax.random.randint(key(3), (64, 16), 0, 10)
    inputs, mask = jax.jit(masking.mask_tokens, static_argnums=2)(key(4), tokens, 10)
    inputs, mask, tokens = map(np.asarray, (inputs, mask, tokens))
    assert mask.dtype == bool and mask.shape == tokens.shape
    assert (mask.sum(1) >= 1).all()
    assert (inputs[mask] == 10).all()
    np.testing.assert_array_equal(inputs[~mask], tokens[~mask])
    # Rates vary per example (a spread of counts, not one shared rate).
    assert len(set(mask.sum(1).tolist())) > 3


@pytest.mark.parametrize("name", masking.SCHEDULES)
def test_schedules_start_at_one_end_at_zero_and_decrease(name):
    ratio = np.linspace(0, 1, 101)
    gamma = masking.mask_schedule(name, ratio)
    assert gamma[0] == pytest.approx(1.0) and gamma[-1] == pytest.approx(0.0, abs=1e-12)
    assert (np.diff(gamma) <= 1e-12).all()


def test_cosine_is_the_paper_schedule():
    ratio = np.linspace(0, 1, 11)
    np.testing.assert_allclose(masking.mask_schedule("cosine", ratio), np.cos(np.pi / 2 * ratio), atol=1e-12)
    assert masking.SCHEDULES[0] == "cosine"


def test_unknown_schedule_lists_choices():
    with pytest.raises(ValueError, match="cosine"):
        masking.mask_schedule("nope", 0.5)
    with pytest.raises(ValueError, match="linear"):
        masking.masking_table("nope", 4, 16)


@pytest.mark.parametrize("name", masking.SCHEDULES)
@pytest.mark.parametrize("steps,num_tokens", [(24, 256), (8, 4096), (12, 64), (16, 16), (1, 5), (7, 8)])
def test_masking_table_reveals_every_step_and_ends_empty(name, steps, num_tokens):
    table = masking.masking_table(name, steps, num_tokens)
    counts = np.concatenate([[num_tokens], table])
    assert table.shape == (steps,) and table[-1] == 0
    assert (np.diff(counts) <= -1).all()  # at least one token revealed per step
    # Enough tokens stay masked for every remaining step to reveal one.
    assert (table >= np.arange(steps - 1, -1, -1)).all()


def test_cosine_table_follows_the_schedule():
    table = masking.masking_table("cosine", 24, 256)
    expected = np.floor(256 * np.cos(np.pi / 2 * np.arange(1, 25) / 24))
    np.testing.assert_array_equal(table, expected)  # no adjustment needed at the paper's sizes
    assert table[0] >= 250  # starts ≈ N: cosine reveals few tokens first


def test_num_masked_after_step_int_and_traced():
    table = masking.masking_table("cosine", 12, 64)
    assert [masking.num_masked_after_step("cosine", t, 12, 64) for t in range(12)] == table.tolist()
    traced = jax.jit(lambda t: masking.num_masked_after_step("cosine", t, 12, 64))
    assert [int(traced(t)) for t in (0, 5, 11)] == [table[0], table[5], table[11]]


def test_too_many_steps_rejected():
    with pytest.raises(ValueError, match="steps"):
        masking.masking_table("cosine", 9, 8)
