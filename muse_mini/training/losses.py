"""Training losses of the transformers: masked-token cross-entropy (Muse §2.3, §2.4, §2.6, §2.7).

Base and super-res share one loss: tokens are masked at arccos rates (§2.6),
the text is dropped on a ``cond_drop`` fraction of examples for
classifier-free guidance (§2.7), and cross-entropy counts the masked
positions only (§2.3).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from muse_mini.decoding.masking import mask_tokens
from muse_mini.models.superres import SuperResTransformer
from muse_mini.models.transformer import BaseTransformer




def masked_cross_entropy(logits_BxNxV, targets_BxN, mask_BxN):
    """Mean cross-entropy and accuracy over the masked positions of the batch only."""
    weight_BxN = mask_BxN.astype(jnp.float32)
    count = jnp.maximum(weight_BxN.sum(), 1.0)
    nll_BxN = optax.softmax_cross_entropy_with_integer_labels(logits_BxNxV.astype(jnp.float32), targets_BxN)
    correct_BxN = (jnp.argmax(logits_BxNxV, axis=-1) == targets_BxN).astype(jnp.float32)
    return (nll_BxN * weight_BxN).sum() / count, (correct_BxN * weight_BxN).sum() / count


def masked_prediction_loss(
    predict: Callable, tokens_BxN, text_mask_BxL, key, *, mask_id: int, cond_drop: float,
):
    """Mask tokens at arccos rates (§2.6), drop text on a ``cond_drop`` fraction (§2.7), score.

    ``predict(inputs_BxN, text_mask_BxL, key) -> logits_BxNxV`` runs the model.
    Dropping text sets that example's whole text mask to False, which the
    blocks turn into "no cross-attention to text". Returns ``(loss, metrics)``.
    """
    batch = tokens_BxN.shape[0]
    mask_key, drop_key, model_key = jax.random.split(key, 3)
    inputs_BxN, mask_BxN = mask_tokens(mask_key, tokens_BxN, mask_id)
    keep_text_B = jax.random.uniform(drop_key, (batch,)) >= cond_drop
    text_mask_BxL = text_mask_BxL & keep_text_B[:, None]
    logits_BxNxV = predict(inputs_BxN, text_mask_BxL, model_key)
    loss, accuracy = masked_cross_entropy(logits_BxNxV, tokens_BxN, mask_BxN)
    metrics = {
        "loss": loss,
        "accuracy": accuracy,
        "mask_rate": mask_BxN.astype(jnp.float32).mean(),
        "text_dropped": 1.0 - keep_text_B.astype(jnp.float32).mean(),
    }
    return loss, metrics


def masked_token_loss(
    model: BaseTransformer, tokens_BxN, text_BxLxD, text_mask_BxL, key, *, cond_drop: float,
):
    """The base model's training loss (§2.3, §2.6, §2.7) on a batch; ``(loss, metrics)``.

    Metrics: ``loss``, ``accuracy`` (masked tokens), ``mask_rate`` (fraction
    of tokens masked), ``text_dropped`` (fraction of examples without text).
    """

    def predict(inputs_BxN, text_mask_BxL, key):
        return model(inputs_BxN, text_BxLxD, text_mask_BxL, key=key)  # the whole batch at once

    return masked_prediction_loss(
        predict, tokens_BxN, text_mask_BxL, key, mask_id=model.mask_id, cond_drop=cond_drop
    )


def superres_loss(
    model: SuperResTransformer, tokens_BxN, lowres_BxM, text_BxLxD, text_mask_BxL, key, *, cond_drop: float,
):
    """Super-res training loss (§2.4): arccos-masked high-res tokens, text dropped on
    ``cond_drop`` of examples, low-res kept. ``lowres_BxM`` is what
    :func:`lowres_condition` gives. Returns ``(loss, metrics)`` as
    :func:`muse_mini.models.transformer.masked_token_loss`.
    """

    def predict(inputs_BxN, text_mask_BxL, key):
        return model(inputs_BxN, lowres_BxM, text_BxLxD, text_mask_BxL, key=key)  # the whole batch

    return masked_prediction_loss(
        predict, tokens_BxN, text_mask_BxL, key, mask_id=model.mask_id, cond_drop=cond_drop
    )
