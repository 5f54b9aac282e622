"""Models sized by a :class:`~muse_mini.config.MuseConfig`: the one place that wires sizes together.

The base transformer's vocabulary is its tokenizer's codebook and its
sequence the tokenizer's grid (§2.3); super-res reads both tokenizers (§2.4).
Training, loading and parameter counting all build through these functions,
so they cannot disagree about a model's shape.
"""

from __future__ import annotations

from muse_mini.config import MuseConfig, tokenizer_stage_config
from muse_mini.models.superres import SuperResTransformer
from muse_mini.models.transformer import BaseTransformer
from muse_mini.models.vqgan import VQGAN


def build_tokenizer(cfg: MuseConfig, stage: str, key) -> VQGAN:
    """The ``stage`` tokenizer (``base``, ``highres`` or the §2.5 ``decoder``)."""
    return VQGAN(tokenizer_stage_config(cfg, stage), key=key)


def build_base(cfg: MuseConfig, key) -> BaseTransformer:
    """The base transformer sized by ``cfg`` (vocabulary and grid from the tokenizer)."""
    return BaseTransformer(
        cfg.base, vocab_size=cfg.tokenizer.codebook_size, seq_len=cfg.tokenizer.grid ** 2,
        text_width=cfg.text.width, key=key,
    )


def build_superres(cfg: MuseConfig, key) -> SuperResTransformer:
    """The super-res transformer sized by ``cfg`` (both tokenizers' vocabularies and grids)."""
    return SuperResTransformer(
        cfg.superres, vocab_size=cfg.highres_tokenizer.codebook_size,
        seq_len=cfg.highres_tokenizer.grid ** 2, lowres_vocab_size=cfg.tokenizer.codebook_size,
        lowres_seq_len=cfg.tokenizer.grid ** 2, text_width=cfg.text.width,
        lowres_patch=cfg.tokenizer.image_size // cfg.tokenizer.grid, key=key,
    )
