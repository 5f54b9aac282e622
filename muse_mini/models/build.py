"""Models sized by a :class:`~muse_mini.config.schema.MuseConfig`: training, loading and parameter counting
all build here, so they cannot disagree about a model's shape."""

from __future__ import annotations

import equinox as eqx
import jax

from muse_mini.config import MuseConfig, tokenizer_stage_config
from muse_mini.models.layers import is_array_like
from muse_mini.models.superres import SuperResTransformer
from muse_mini.models.transformer import BaseTransformer
from muse_mini.models.vqgan import VQGAN


def build_tokenizer(cfg: MuseConfig, stage: str, key) -> VQGAN:
    """The ``stage`` tokenizer (``base``, ``highres`` or the §2.5 ``decoder``)."""
    return VQGAN(tokenizer_stage_config(cfg, stage), key=key)


def build_base(cfg: MuseConfig, key) -> BaseTransformer:
    """The base transformer (§2.3): vocabulary and grid from the low-res tokenizer."""
    return BaseTransformer(
        cfg.base, vocab_size=cfg.tokenizer.codebook_size, seq_len=cfg.tokenizer.grid ** 2,
        text_width=cfg.text.width, key=key,
    )


def build_superres(cfg: MuseConfig, key, lowres_tokenizer: VQGAN | None = None) -> SuperResTransformer:
    """The super-res transformer (§2.4). With ``superres.lowres_input="pixels"`` it keeps a frozen copy
    of ``lowres_tokenizer``'s decoder; without one (a skeleton to load into) a fresh one stands in."""
    if cfg.superres.lowres_input == "pixels":
        like = eqx.filter_eval_shape(build_tokenizer, cfg, "base", key)
        if lowres_tokenizer is None:
            lowres_tokenizer = build_tokenizer(cfg, "base", key)
        elif _decoder_shapes(lowres_tokenizer) != _decoder_shapes(like):
            raise ValueError("lowres_tokenizer: its codebook or decoder is not the shape tokenizer.* describes; "
                             "train super-res with the config its tokenizer run was trained with")
    return SuperResTransformer(
        cfg.superres, vocab_size=cfg.highres_tokenizer.codebook_size,
        seq_len=cfg.highres_tokenizer.grid ** 2, lowres_vocab_size=cfg.tokenizer.codebook_size,
        lowres_seq_len=cfg.tokenizer.grid ** 2, text_width=cfg.text.width,
        lowres_tokenizer=lowres_tokenizer if cfg.superres.lowres_input == "pixels" else None, key=key,
    )


def _decoder_shapes(tokenizer) -> tuple:
    tree = eqx.filter((tokenizer.quantizer, tokenizer.decoder), is_array_like)
    return jax.tree.structure(tree), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]
