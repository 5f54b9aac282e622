"""Optimisers and learning-rate schedules (Muse Tables 4-6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["make_schedule", "make_optimizer", "weight_decay_mask"]


def make_schedule(
    lr: float, warmup_steps: int, total_steps: int, end_fraction: float = 0.0
) -> optax.Schedule:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine decay (Tables 4-6) to
    ``lr * end_fraction`` at ``total_steps``, constant after."""
    # optax needs a non-empty cosine phase; a run that is all warmup just ends at lr.
    total = max(int(total_steps), int(warmup_steps) + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=lr,
        warmup_steps=int(warmup_steps),
        decay_steps=total,
        end_value=lr * end_fraction,
    )


def weight_decay_mask(params: Any) -> Any:
    """True for leaves with ``ndim >= 2`` (matrices, conv kernels, embeddings): what weight decay touches."""
    # Biases and norm scales set offsets and scales rather than carrying capacity; pulling
    # a norm's gain towards zero fights the normalisation (standard since BERT/AdamW).
    return jax.tree.map(lambda x: getattr(x, "ndim", 0) >= 2, params)


def _adafactor_b2(b2: float) -> Callable:
    # Adafactor's usual β2 schedule is 1 - (t+1)^-0.8, which rises towards 1 and
    # acts as bias correction early on. Muse reports β2 = 0.96 (Table 4), so we
    # cap it there: the first ~55 steps follow the schedule, then β2 = 0.96.
    def decay_rate_fn(step, exponent):
        t = jnp.asarray(step + 1, jnp.float32)
        return jnp.minimum(1.0 - t ** (-exponent), b2)

    return decay_rate_fn


def make_optimizer(cfg: Any, end_fraction: float = 0.0) -> optax.GradientTransformation:
    """The optimiser a `TrainConfig` describes (gradients clipped to ``clip_norm`` first, if set).

    ``adam``: L2 decay added to the gradient (Table 5, as ``torch.optim.Adam``); ``adamw``:
    decoupled decay; ``adafactor``: Tables 4/6 (β1 0.9 momentum, β2 capped at 0.96, decay 0.045).
    """
    # Not optax.adafactor: its weight_decay_rate is not scaled by the learning rate (0.045 would
    # shrink every weight 4.5% a step), it cannot cap β2, and multiply_by_parameter_scale makes the
    # learning rate relative to the weight scale, unlike Muse's 1e-4.
    schedule = make_schedule(cfg.lr, cfg.warmup_steps, cfg.steps, end_fraction)
    decay = (
        [optax.add_decayed_weights(cfg.weight_decay, mask=weight_decay_mask)]
        if cfg.weight_decay
        else []
    )
    clip = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    if cfg.optimizer == "adam":
        core = [*decay, optax.scale_by_adam(cfg.b1, cfg.b2)]
    elif cfg.optimizer == "adamw":
        core = [optax.scale_by_adam(cfg.b1, cfg.b2), *decay]
    elif cfg.optimizer == "adafactor":
        core = [
            optax.scale_by_factored_rms(decay_rate=0.8, decay_rate_fn=_adafactor_b2(cfg.b2)),
            optax.clip_by_block_rms(1.0),
            optax.ema(cfg.b1, debias=False),  # momentum, as optax.adafactor does it
            *decay,
        ]
    else:
        raise ValueError(
            f"unknown optimizer {cfg.optimizer!r}; expected 'adam', 'adamw' or 'adafactor'"
        )
    return optax.chain(*clip, *core, optax.scale_by_learning_rate(schedule))
