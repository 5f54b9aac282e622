"""Training data for the transformer stages: token maps plus frozen text embeddings.

The tokenizers and the text encoder are frozen once trained (Muse §2.1, §2.2),
so the transformer stages never need pixels: every training image is tokenised
once, every distinct caption is embedded once, and a batch is a gather from
these arrays. The arrays are cached in the stage's run directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from muse_mini.config import MuseConfig
from muse_mini.data.shapes import CANVAS, downsample, generate
from muse_mini.data.image_shards import ImageBatches, open_image_shards
from muse_mini.models.codec import decode_tokens, encode_images
from muse_mini.models.text.cache import EmbeddingCache
from muse_mini.models.text.encoder import load_text_encoder


def training_images(cfg: MuseConfig, n: int | None = None) -> tuple[np.ndarray, list[str]]:
    """High-res training images (uint8, ``highres_tokenizer.image_size``) and captions.

    ``cfg.data.source == "shapes"`` draws the built-in Shapes world's train
    split; anything else is read through :func:`muse_mini.data.image_shards.open_image_shards`
    (a webdataset, imagefolder, parquet, ``save_to_disk`` directory or hub name),
    the first ``n`` examples (0: all). Everything is held in memory: this is the
    small-data ``feed=cache`` path, capped by ``data.cache_max``.
    """
    n = cfg.data.num_examples if n is None else n
    size = cfg.highres_tokenizer.image_size
    if cfg.data.source == "shapes":
        if size != CANVAS:
            raise ValueError(f"highres_tokenizer.image_size: Shapes images are {CANVAS}px, got {size}")
        images, captions, _ = generate(
            n, seed=cfg.data.seed, split="train", paraphrase_prob=cfg.data.paraphrase_prob,
            kinds=cfg.data.kinds,
        )
        return images, list(captions)
    source = open_image_shards(cfg.data)
    pairs = [(s, r) for s, count in enumerate(source.counts) for r in range(count)][: n or None]
    reader = ImageBatches(source, None, size, workers=cfg.data.workers, on_error=cfg.data.on_error)
    try:
        return reader.read(pairs, fill=False)
    finally:
        reader.close()


def lowres_images(cfg: MuseConfig, images_hr: np.ndarray) -> np.ndarray:
    """The base stage's images: the high-res ones box-downsampled (spec: 2×2 mean)."""
    return downsample(images_hr, cfg.highres_tokenizer.image_size // cfg.tokenizer.image_size)


class PickledCacheError(ValueError):
    """A token cache written with pickles by an older muse_mini; it is never unpickled."""


@dataclasses.dataclass
class TokenData:
    """Tokenised image-text pairs; ``caption_index`` points into ``captions``/``text``."""

    tokens: np.ndarray  # N×n_lo int32, base tokenizer
    caption_index: np.ndarray  # N int32
    captions: list[str]  # U distinct captions
    text: np.ndarray  # U×L×D float32, frozen encoder outputs
    text_mask: np.ndarray  # U×L bool
    hr_tokens: np.ndarray | None = None  # N×n_hi int32, high-res tokenizer
    lowres_images: np.ndarray | None = None  # N×h×w×3 uint8, `tokens` decoded (super-res "pixels" input)

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, idx: np.ndarray) -> dict:
        cap = self.caption_index[idx]
        out = {"tokens": self.tokens[idx], "text": self.text[cap], "text_mask": self.text_mask[cap]}
        for name in ("hr_tokens", "lowres_images"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)[idx]
        return out

    def save(self, path) -> None:
        """Write every field to one ``.npz`` without pickles (captions as a fixed-width unicode array).

        Loading a shared run directory must not run code, so nothing here is an object array.
        """
        arrays = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "captions"}
        arrays["captions"] = np.array(self.captions, dtype=np.str_).reshape(len(self.captions))
        tmp = Path(path).with_suffix(".tmp.npz")
        np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
        tmp.replace(path)

    @classmethod
    def load(cls, path) -> "TokenData":
        """Read a cache written by :meth:`save`; never unpickles (``allow_pickle=False``).

        Raises
        ------
        ValueError
            If ``path`` holds pickled arrays (a cache from an older muse_mini):
            delete it and the stage rebuilds it.
        """
        try:
            with np.load(path, allow_pickle=False) as f:
                fields = {k: f[k] for k in f.files}
        except ValueError as e:
            if "allow_pickle" not in str(e):
                raise
            raise PickledCacheError(f"path: {path} is a token cache with pickled captions (written by an older "
                             "muse_mini), which is not loaded because unpickling can run code; "
                             "delete it and rerun the stage to rebuild it") from None
        fields["captions"] = [str(c) for c in fields["captions"]]
        return cls(**fields)


def encode_captions(cfg: MuseConfig, captions: list[str], cache_dir=None):
    """Embed each distinct caption once with the frozen text encoder (§2.1).

    Returns ``(unique_captions, index_N, text_UxLxD, mask_UxL)``.
    """
    unique = sorted(set(captions))
    lookup = {c: i for i, c in enumerate(unique)}
    index = np.array([lookup[c] for c in captions], dtype=np.int32)
    encoder = load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length)
    cache = EmbeddingCache(encoder, directory=cache_dir)
    text, mask = cache.encode(unique)
    return unique, index, np.asarray(text, np.float32), np.asarray(mask, bool)


def build_token_data(cfg: MuseConfig, tokenizer, highres_tokenizer=None, *, cache_dir=None,
                     progress: bool = True) -> TokenData:
    """Tokenise the training images with the frozen tokenizer(s) and embed the captions.

    With a ``highres_tokenizer`` (the super-res stage) and
    ``superres.lowres_input == "pixels"``, the low-res token maps are also
    decoded once, as the super-res model sees them at sampling time.
    """
    images_hr, captions = training_images(cfg)
    tokens = encode_images(tokenizer, lowres_images(cfg, images_hr), progress=progress)
    hr_tokens = decoded = None
    if highres_tokenizer is not None:
        hr_tokens = encode_images(highres_tokenizer, images_hr, progress=progress)
        hr_tokens = hr_tokens.reshape(len(hr_tokens), -1).astype(np.int32)
        if cfg.superres.lowres_input == "pixels":
            decoded = decode_tokens(tokenizer, tokens)
    unique, index, text, mask = encode_captions(cfg, captions, cache_dir)
    return TokenData(
        tokens=tokens.reshape(len(tokens), -1).astype(np.int32), caption_index=index,
        captions=unique, text=text, text_mask=mask, hr_tokens=hr_tokens, lowres_images=decoded,
    )
