"""Notebook 04's exercises: what the super-res translator cross-attends to (§2.4, Figure 4), checked against
:meth:`muse_mini.models.superres.SuperResTransformer.encode_condition`, and PSNR (§2.5) against
:func:`muse_mini.models.images.psnr`."""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.config import SuperResConfig
from muse_mini.course.checking import Exercise, Wrong, describe, diagnose, expect_shape, run_check, to_array
from muse_mini.models.images import psnr as library_psnr
from muse_mini.models.superres import SuperResTransformer
from muse_mini.models.transformer import project_text

__all__ = ["check_superres_context", "check_psnr", "EXERCISES"]

TEXT_WIDTH = 12


def tiny_superres(lowres_seq_len: int, seed: int = 0) -> SuperResTransformer:
    """A one-layer super-res model with random weights: enough to run the library's ``encode_condition``.

    Its shapes come from ``filter_eval_shape`` and its weights from NumPy: initialising it with
    ``jax.random`` would compile for longer than the whole check takes.
    """
    cfg = SuperResConfig(depth=1, width=16, mlp_dim=32, num_heads=2, lowres_depth=1)
    abstract = eqx.filter_eval_shape(
        SuperResTransformer, cfg, vocab_size=8, seq_len=16, lowres_vocab_size=8, lowres_seq_len=lowres_seq_len,
        text_width=TEXT_WIDTH, key=jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(0.0, 0.3, x.shape), x.dtype), abstract)


@eqx.filter_jit
def _library_context(model, text_BxTxE, text_mask_BxT, lowres_BxM):
    """The learner's inputs (projected text, encoded low-res tokens) and the library's condition."""
    text_BxTxD = project_text(model.text_proj, text_BxTxE, text_mask_BxT, TEXT_WIDTH, model.decoder.dtype)
    cond = model.encode_condition(lowres_BxM, text_BxTxE, text_mask_BxT)
    return text_BxTxD, model.encode_lowres(lowres_BxM), cond.context, cond.context_mask


@functools.cache
def _context_cases():
    """``(text, text_mask, lowres, context, mask)``: one library call (B=3, T=7, M=9), then a batch of one
    and a shorter text cut from it (each example's condition is its own; the text is projected token by token)."""
    rng = np.random.default_rng(4)
    batch, length, m = 3, 7, 9
    text = jnp.asarray(rng.normal(size=(batch, length, TEXT_WIDTH)), jnp.float32)
    text_mask = jnp.asarray(np.arange(length)[None, :] < np.array([[5], [7], [1]]))
    lowres_ids = jnp.asarray(rng.integers(0, 8, (batch, m)), jnp.int32)
    text, low, context, mask = _library_context(tiny_superres(m), text, text_mask, lowres_ids)
    short = m + 4
    return ((text, text_mask, low, context, mask), (text[:1], text_mask[:1], low[:1], context[:1], mask[:1]),
            (text[1:, :4], text_mask[1:, :4], low[1:], context[1:, :short], mask[1:, :short]))


def check_superres_context(fn):
    """``superres_context(text_BxTxD, text_mask_BxT, lowres_BxMxD) -> (context, mask)``: the encoded low-res
    tokens and the projected text side by side along the sequence, with a key mask (§2.4, Figure 4)."""

    def body(learner):
        note = None
        learner.probe(jnp.zeros((1, 2, 16)), jnp.ones((1, 2), bool), jnp.zeros((1, 3, 16)))
        for text, text_mask, low, *want in _context_cases():
            (batch, length, _), m = text.shape, low.shape[1]
            call = describe("superres_context", text_BxTxD=text, text_mask_BxT=text_mask, lowres_BxMxD=low)
            out = learner(text, text_mask, low, call=call)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise Wrong(f"{call} returned {type(out).__name__}, expected a pair (context, mask)",
                            "return both: the attention needs to know which keys are padding")
            context, mask = to_array(out[0], call), to_array(out[1], call)
            width, total = low.shape[-1], m + length
            if context.ndim == 3 and context.shape[-1] != width:
                raise Wrong(f"{call} returned a context of shape {context.shape}, expected {(batch, total, width)}",
                            "concatenate along the sequence axis (axis 1), not the features")
            expect_shape(context, (batch, total, width), call, "M low-res entries then T text entries, each of width D")
            if mask.shape == text_mask.shape:
                raise Wrong(f"{call}: the mask covers the text only",
                            "the low-res tokens are always attended: prepend jnp.ones((B, M), bool) to the text mask")
            expect_shape(mask, (batch, total), call, "one key-mask entry per context entry")
            if mask.dtype != np.bool_:
                raise Wrong(f"{call} returned a mask of dtype {mask.dtype}", "a boolean key mask (True = attend)")
            note = _judge_context(context, mask, want, m, call) or note
        return note

    return run_check("superres_context", fn, body)


def _judge_context(context, mask, want, m, call):
    want_c, want_m = (np.asarray(x) for x in want)
    if np.allclose(context, want_c, atol=1e-5) and np.array_equal(mask, want_m):
        return None
    # Text first is the same condition: cross-attention has no positions over its keys.
    text_first_c = np.concatenate([want_c[:, m:], want_c[:, :m]], axis=1)
    text_first_m = np.concatenate([want_m[:, m:], want_m[:, :m]], axis=1)
    if np.allclose(context, text_first_c, atol=1e-5) and np.array_equal(mask, text_first_m):
        return "text first, the library puts the low-res tokens first; cross-attention does not depend on the order"
    if np.allclose(context, want_c, atol=1e-5) or np.allclose(context, text_first_c, atol=1e-5):
        if not mask[:, :m].any() or (np.allclose(context, text_first_c, atol=1e-5) and not mask[:, -m:].any()):
            raise Wrong(f"{call}: the low-res tokens are masked out",
                        "mark them True in the mask: they are never padding")
        if np.array_equal(mask, text_first_m) or np.array_equal(mask, want_m):
            raise Wrong(f"{call}: the mask's order does not match the context's",
                        "put the mask pieces in the same order as the context pieces")
        raise Wrong(f"{call}: the context is right but the mask is not",
                    "low-res entries all True, then the text's own mask")
    raise Wrong(f"{call}: the context differs from encode_condition's", "jnp.concatenate([lowres, text], axis=1), "
                "with the mask jnp.concatenate([jnp.ones((B, M), bool), text_mask], axis=1)")


def _psnr_cases():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 6, a.shape), 0, 255).astype(np.uint8)
    c = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    d = np.clip(c + rng.normal(0, 3, c.shape) * np.array([1, 3, 8])[:, None, None, None], 0, 255).astype(np.uint8)
    e = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    f = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    return [(a, b), (c, d), (e, f), (e, e.copy())]


def _psnr_mistakes(a, b):
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = np.mean(diff**2)
    wrapped = np.mean((a - b) ** 2)  # what uint8 arithmetic computes
    per_image = (np.mean([10 * math.log10(255**2 / max(np.mean(x**2), 1e-12)) for x in diff])
                 if a.ndim == 4 and len(a) > 1 else None)
    if mse == 0:
        return []
    return [
        (10 * np.log10(255**2 / wrapped) if wrapped else None, "uint8 arithmetic wrapped around",
         "convert to float before subtracting: a.astype(np.float64) - b.astype(np.float64)"),
        (10 * np.log10(1 / mse), "the peak value is wrong", "uint8 images peak at 255: 10·log10(255² / MSE)"),
        (20 * np.log10(255 / mse), "the square root is missing", "20·log10(255 / √MSE) = 10·log10(255² / MSE)"),
        (10 * np.log10(255 / mse), "the peak is not squared", "10·log10(255² / MSE)"),
        (10 * np.log10(255**2 / np.sqrt(mse)), "you used the RMS error, not the mean squared error",
         "10·log10(255² / MSE), MSE = mean((a − b)²)"),
        (np.log10(255**2 / mse), "the factor 10 is missing (that is bels, not decibels)", "10·log10(255² / MSE)"),
        (per_image, "you averaged per-image PSNRs", "the library's PSNR is of the whole batch's mean squared error"),
    ]


def check_psnr(fn):
    """``psnr(a, b) -> dB``: ``10·log10(255² / MSE)`` of two uint8 image batches, infinite when equal (§2.5)."""

    def body(learner):
        for a, b in _psnr_cases():
            call = describe("psnr", a=a, b=b)
            out = to_array(learner(a.copy(), b.copy(), call=call), call, what="a number")
            expect_shape(out, (), call, "one PSNR (dB) for the whole batch")
            want = library_psnr(a, b)
            if math.isinf(want):
                if not np.isposinf(out):
                    raise Wrong(f"{call} returned {float(out):.4g} for identical images",
                                "MSE = 0: PSNR is infinite; return float('inf') when mse == 0")
                continue
            diagnose(out, want, call, _psnr_mistakes(a, b), rtol=1e-5, atol=1e-3, what="PSNRs",
                     hint="10·log10(255² / mean((a − b)²)), computed in float")

    return run_check("psnr", fn, body)


EXERCISES = (
    Exercise("04", "superres_context", check_superres_context, "§2.4",
             "the encoded low-res tokens and the projected text side by side, with the key mask (Figure 4)"),
    Exercise("04", "psnr", check_psnr, "§2.5",
             "PSNR in dB of two uint8 images (batches): 10·log10(255² / MSE), infinite when equal"),
)
