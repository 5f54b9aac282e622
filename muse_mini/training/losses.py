"""The transformers' training step (base §2.3, super-res §2.4): masked-token loss and one update.

Tokens are masked at arccos rates (§2.6), text dropped for classifier-free guidance
(§2.7), cross-entropy counts masked positions only; `TrainStep` applies Table 4's optimiser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from muse_mini.decoding.masking import mask_tokens
from muse_mini.models.superres import FrozenDecoder, SuperResTransformer
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
    """Mask tokens at arccos rates (§2.6), drop the text of a ``cond_drop`` fraction (its whole mask
    False: no cross-attention to text, §2.7), score ``predict(inputs, text_mask, key)``'s logits."""
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
    """The base model's loss on a batch (§2.3); metrics ``accuracy`` (of masked tokens),
    ``mask_rate`` and ``text_dropped`` (fractions of tokens masked, of examples without text)."""

    def predict(inputs_BxN, text_mask_BxL, key):
        return model(inputs_BxN, text_BxLxD, text_mask_BxL, key=key)  # the whole batch at once

    return masked_prediction_loss(
        predict, tokens_BxN, text_mask_BxL, key, mask_id=model.mask_id, cond_drop=cond_drop
    )


def superres_loss(
    model: SuperResTransformer, tokens_BxN, lowres_BxM, text_BxLxD, text_mask_BxL, key, *, cond_drop: float,
):
    """Super-res loss (§2.4): the high-res tokens masked, the low-res ids ``lowres_BxM`` always kept."""

    def predict(inputs_BxN, text_mask_BxL, key):
        return model(inputs_BxN, lowres_BxM, text_BxLxD, text_mask_BxL, key=key)  # the whole batch

    return masked_prediction_loss(
        predict, tokens_BxN, text_mask_BxL, key, mask_id=model.mask_id, cond_drop=cond_drop
    )


def stage_loss(cfg, stage: str) -> Callable:
    """``loss_fn(model, batch, key)`` of the ``"base"`` or ``"superres"`` stage on a feed's batch."""
    if stage == "base":
        return lambda model, batch, key: masked_token_loss(
            model, batch["tokens"], batch["text"], batch["text_mask"], key, cond_drop=cfg.base.cond_drop)
    if stage == "superres":  # translate the low-res tokens into the high-res ones
        return lambda model, batch, key: superres_loss(
            model, batch["hr_tokens"], batch["tokens"], batch["text"], batch["text_mask"], key,
            cond_drop=cfg.superres.cond_drop)
    raise ValueError(f"stage: expected 'base' or 'superres', got {stage!r}")


def trainable(model: Any) -> Any:
    """``eqx.partition`` spec of what the optimiser updates: every float array except the
    frozen copy of the low-res decoder a pixel-input super-res model holds (§2.4)."""
    return jax.tree.map(eqx.is_inexact_array, model, is_leaf=lambda x: isinstance(x, FrozenDecoder))


class TrainState(eqx.Module):
    model: Any
    opt_state: Any


def init_train_state(model, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(model, optimizer.init(eqx.filter(model, trainable(model))))


class TrainStep(eqx.Module):
    """``step(state, batch, key) -> (state, metrics)``: one update of ``loss_fn(model, batch, key)``;
    ``encode`` first turns a raw batch into token ids with frozen modules (``data.feed=images``)."""

    loss_fn: Callable = eqx.field(static=True)
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    encode: Callable | None = None

    def __call__(self, state: TrainState, batch, key):
        if self.encode is not None:
            batch = self.encode(batch)
        params, frozen = eqx.partition(state.model, trainable(state.model))
        (loss, metrics), grads = eqx.filter_value_and_grad(
            lambda p: self.loss_fn(eqx.combine(p, frozen), batch, key), has_aux=True
        )(params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, params)
        model = eqx.apply_updates(state.model, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree_utils.tree_norm(grads))
        return TrainState(model, opt_state), metrics


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, encode=None) -> TrainStep:
    """The base and super-res stages' step (they differ only in ``loss_fn``); see `TrainStep`."""
    return TrainStep(loss_fn, optimizer, encode)
