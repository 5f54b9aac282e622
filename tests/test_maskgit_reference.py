"""The sampler against an independent NumPy re-implementation of MaskGIT's parallel decoding.

The reference below is written from the MaskGIT paper (Chang et al. 2022, §3.2
"Iterative decoding") and its published decoding loop, not from
``muse_mini.decoding.sampler``: at iteration t of T, with ratio r = (t+1)/T,

1. predict: sample a token at every masked position (a categorical draw,
   taken here as Gumbel-max with given noise);
2. mask schedule: keep n = ⌊N₀·γ(r)⌋ tokens masked, γ(r) = cos(πr/2),
   clamped to [1, unknown − 1] before the last iteration, none after it;
3. mask: re-mask the n sampled tokens of lowest confidence, where confidence
   is the log-probability of the sampled token plus Gumbel noise scaled by
   choice_temperature·(1 − r); tokens fixed earlier have confidence +inf.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mini.decoding.sampler import decode
from muse_mini.decoding.spec import DecodeSpec

B, N, V, MASK = 3, 16, 11, 11


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def maskgit_reference(logits_BxNxV, noise_TxBxNxV1, *, steps, temperature, choice_temperature):
    """Tokens and masks after every iteration, MaskGIT's way (NumPy only)."""
    tokens = np.full((B, N), MASK)
    unknown = np.ones((B, N), bool)
    n0 = unknown.sum(-1)
    out_tokens, out_masks = [], []
    for t in range(steps):
        ratio = (t + 1) / steps
        g = noise_TxBxNxV1[t]
        sampled = np.where(unknown, np.argmax(logits_BxNxV / temperature + g[..., :V], -1), tokens)
        logp = np.take_along_axis(_log_softmax(logits_BxNxV), sampled[..., None], -1)[..., 0]
        confidence = np.where(unknown, logp + choice_temperature * (1 - ratio) * g[..., V], np.inf)
        if t == steps - 1:
            mask_len = np.zeros(B, int)
        else:
            mask_len = np.floor(n0 * np.cos(np.pi / 2 * ratio)).astype(int)
            mask_len = np.maximum(1, np.minimum(unknown.sum(-1) - 1, mask_len))
        cut = np.sort(confidence, -1)[np.arange(B), mask_len]
        unknown = confidence < cut[:, None]
        tokens = np.where(unknown, MASK, sampled)
        out_tokens.append(tokens)
        out_masks.append(unknown)
    return np.stack(out_tokens, 1), np.stack(out_masks, 1)


@pytest.mark.parametrize("steps, temperature, choice_temperature", [(4, 1.0, 4.5), (6, 0.5, 1.0), (3, 2.0, 0.0)])
def test_decode_matches_the_maskgit_reference(steps, temperature, choice_temperature):
    logits_BxNxV = np.asarray(jax.random.normal(jax.random.key(1), (B, N, V)) * 3.0)
    key = jax.random.key(7)
    # decode_step draws its step's noise as fold_in(key, step); the reference is handed the same numbers.
    noise = np.stack([np.asarray(jax.random.gumbel(jax.random.fold_in(key, t), (B, N, V + 1)))
                      for t in range(steps)])
    traj = decode(lambda tokens_BxN, step: jnp.asarray(logits_BxNxV), jnp.zeros((B, N), jnp.int32),
                  jnp.ones((B, N), bool), key=key, spec=DecodeSpec(steps=steps, mask_id=MASK, schedule="cosine"),
                  temperature=temperature, choice_temperature=choice_temperature)
    ref_tokens, ref_masks = maskgit_reference(logits_BxNxV, noise, steps=steps, temperature=temperature,
                                              choice_temperature=choice_temperature)
    np.testing.assert_array_equal(np.asarray(traj.mask_BxTxN), ref_masks)
    np.testing.assert_array_equal(np.asarray(traj.tokens_BxTxN), ref_tokens)
    assert not ref_masks[:, -1].any() and (ref_tokens[:, -1] < MASK).all()


def test_the_reference_tells_the_anneals_apart():
    """With strong choice noise, the old anneal 1 − t/T ranks differently, so the test above can fail."""
    logits_BxNxV = np.asarray(jax.random.normal(jax.random.key(1), (B, N, V)) * 3.0)
    noise = np.stack([np.asarray(jax.random.gumbel(jax.random.fold_in(jax.random.key(7), t), (B, N, V + 1)))
                      for t in range(4)])
    maskgit, _ = maskgit_reference(logits_BxNxV, noise, steps=4, temperature=1.0, choice_temperature=4.5)
    # The old anneal at step t equals MaskGIT's with the noise scaled by (1 - t/T) / (1 - (t+1)/T).
    shifted = noise.copy()
    for t in range(3):
        shifted[t, ..., V] *= (1 - t / 4) / (1 - (t + 1) / 4)
    old, _ = maskgit_reference(logits_BxNxV, shifted, steps=4, temperature=1.0, choice_temperature=4.5)
    assert (old != maskgit).any()
