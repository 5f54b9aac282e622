"""Notebook 00's exercises: pooling and comparing the frozen text encoder's embeddings (§2.1).

The library pools captions inline (the demo's similarity figure), so the reference is written here.
"""

from __future__ import annotations

import numpy as np

from muse_mini.course.checking import Exercise, Wrong, describe, diagnose, expect_shape, run_check, to_array

__all__ = ["check_masked_mean_pool", "check_cosine_similarity", "EXERCISES"]


def _padded_batch(rng, batch: int, length: int, width: int):
    """Embeddings and a mask with 1..length real tokens per row, the padding's embeddings not zero."""
    emb = rng.normal(size=(batch, length, width)).astype(np.float32)
    real = rng.integers(1, length + 1, size=batch)
    real[0] = max(1, length - 2) if length > 2 else 1  # at least one row with real padding
    mask = np.arange(length)[None, :] < real[:, None]
    return emb, mask


def masked_mean_pool_reference(emb_BxTxD, mask_BxT):
    weight = np.asarray(mask_BxT, np.float64)[..., None]
    return (np.asarray(emb_BxTxD, np.float64) * weight).sum(1) / weight.sum(1)


def check_masked_mean_pool(fn):
    """``masked_mean_pool(emb_BxTxD, mask_BxT) -> BxD``: the mean over each caption's real tokens (§2.1)."""

    def body(learner):
        rng = np.random.default_rng(0)
        for batch, length, width in [(1, 5, 3), (4, 7, 6), (3, 16, 9)]:
            emb, mask = _padded_batch(rng, batch, length, width)
            call = describe("masked_mean_pool", emb_BxTxD=emb, mask_BxT=mask)
            out = to_array(learner(emb, mask, call=call), call)
            if out.shape == (batch, length) and length != width:
                raise Wrong(f"{call} pooled over the wrong axis", "average over the token axis T (axis 1), keeping D")
            expect_shape(out, (batch, width), call, "average over the token axis (axis 1), one vector per caption")
            w = mask[..., None].astype(np.float64)
            diagnose(out, masked_mean_pool_reference(emb, mask), call, [
                (emb.mean(1), "you averaged over the padding too",
                 "multiply by the mask and divide by the number of REAL tokens, mask.sum(1)"),
                ((emb * w).sum(1), "you summed instead of averaging",
                 "divide the masked sum by the number of real tokens per caption"),
                (lambda: (emb * w).sum(1) / length, "you divided by the padded length",
                 "divide by mask.sum(1), the number of real tokens, not by T"),
                (lambda: (emb * w).sum(1) / w.sum(), "you divided by the real tokens of the whole batch",
                 "divide each caption by its own count: mask.sum(axis=1, keepdims=True)"),
            ], hint="pooled = (emb * mask[..., None]).sum(1) / mask.sum(1)[:, None]")

    return run_check("masked_mean_pool", fn, body)


def cosine_similarity_reference(a_NxD, b_MxD):
    a = np.asarray(a_NxD, np.float64)
    b = np.asarray(b_MxD, np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def check_cosine_similarity(fn):
    """``cosine_similarity(a_NxD, b_MxD) -> NxM``: every pair's cosine (pooled caption embeddings, §2.1)."""

    def body(learner):
        rng = np.random.default_rng(1)
        for n, m, d in [(1, 1, 4), (3, 5, 8), (6, 2, 7)]:
            # Rows of different lengths, so forgetting to normalise shows.
            a = (rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=(n, 1))).astype(np.float32)
            b = (rng.normal(size=(m, d)) * rng.uniform(0.5, 3, size=(m, 1))).astype(np.float32)
            call = describe("cosine_similarity", a_NxD=a, b_MxD=b)
            out = to_array(learner(a, b, call=call), call)
            if out.shape == (m, n) and n != m:
                raise Wrong(f"{call} returned shape {m}x{n}, expected {n}x{m}",
                            "entry [i, j] compares a[i] with b[j]: a @ b.T, not b @ a.T")
            expect_shape(out, (n, m), call, "one cosine per pair: a @ b.T of the normalised rows")
            na = a / np.linalg.norm(a, axis=1, keepdims=True)
            nb = b / np.linalg.norm(b, axis=1, keepdims=True)
            diagnose(out, cosine_similarity_reference(a, b), call, [
                (a @ b.T, "you returned dot products, not cosines",
                 "divide each row by its length (np.linalg.norm(x, axis=1, keepdims=True)) first"),
                (na @ b.T, "you normalised a but not b", "normalise the rows of both inputs"),
                (a @ nb.T, "you normalised b but not a", "normalise the rows of both inputs"),
                (lambda: (a / np.linalg.norm(a, axis=0)) @ (b / np.linalg.norm(b, axis=0)).T,
                 "you normalised the columns, not the rows", "norm over the feature axis: axis=1, keepdims=True"),
            ], hint="cos(a, b) = a·b / (‖a‖ ‖b‖) for every row pair", rtol=1e-3, atol=1e-4)

    return run_check("cosine_similarity", fn, body)


EXERCISES = (
    Exercise("00", "masked_mean_pool", check_masked_mean_pool, "§2.1",
             "average a caption's token embeddings over its real tokens only (mask True), not the padding"),
    Exercise("00", "cosine_similarity", check_cosine_similarity, "§2.1",
             "the N×M matrix of cosine similarities between the rows of a (N×D) and of b (M×D)"),
)
