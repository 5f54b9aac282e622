"""Stage 4: training the super-resolution token translator (Muse §2.4).

The high-res tokens of each training image are masked at an arccos rate and
predicted from the ground-truth low-res tokens (the base tokenizer on the
2×-downsampled image; with ``lowres_input="pixels"`` the image they decode
to, stored with the data) and the text, with the same 10% text dropout as the base
model (§2.7). Same trainer, same train step as the base stage; only the model
and its loss differ. Optimiser: Table 6 (as Table 4).
"""

from __future__ import annotations

from muse_mini.config import MuseConfig
from muse_mini.models.build import build_superres
from muse_mini.models.superres import lowres_condition
from muse_mini.training.losses import superres_loss
from muse_mini.training.base import train_transformer


def _superres_loss(cfg: MuseConfig):
    def loss_fn(model, batch, key):
        # lowres_input="pixels": the data holds the decoded low-res images.
        lowres = lowres_condition(model, batch["tokens"], images=batch.get("lowres_images"))
        return superres_loss(
            model, batch["hr_tokens"], lowres, batch["text"], batch["text_mask"], key,
            cond_drop=cfg.superres.cond_drop,
        )

    return loss_fn


def train_superres(cfg: MuseConfig, run_dir, *, tokenizer_run, highres_tokenizer_run,
                   progress: bool = True):
    """Train (or resume, or just load) the super-res model in ``run_dir``; returns it."""
    return train_transformer(
        cfg, run_dir, stage="superres", build=build_superres, loss_fn=_superres_loss(cfg),
        train_cfg=cfg.superres_train, progress=progress,
        tokenizer_runs={"tokenizer_run": tokenizer_run, "highres_tokenizer_run": highres_tokenizer_run},
    )
