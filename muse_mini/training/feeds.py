"""Batches for the transformer stages: token ids and text embeddings (§2.1-2.2: both encoders frozen).

``data.feed`` picks how a stage gets them:

- ``cache``: every image tokenised and every distinct caption embedded once, into
  the run's ``data.npz``, held in memory (Shapes and other sets up to ``data.cache_max``);
- ``shards``: pre-tokenised shards (``muse-mini tokenize``), a batch read at a time;
- ``images``: images and captions streamed, encoded inside the step by the frozen
  tokenizers and text encoder (`ImageEncoder`, the feed's ``encode``).

A batch is ``tokens``, ``text``, ``text_mask`` (and super-res's ``hr_tokens``), and
``batch_fn(step)`` is pure in the step, so runs resume exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.config import MuseConfig
from muse_mini.data.image_shards import open_image_reader, open_image_shards
from muse_mini.data.shapes import CANVAS, downsample, generate
from muse_mini.data.stream import Prefetch, ShardedOrder
from muse_mini.data.token_shards import TokenShards
from muse_mini.models.codec import encode_images
from muse_mini.models.images import to_float
from muse_mini.models.text.cache import EmbeddingCache
from muse_mini.models.text.encoder import load_text_encoder
from muse_mini.parallel.hosts import barrier, is_main_process
from muse_mini.runs.layout import read_run_config
from muse_mini.runs.load import load_tokenizer
from muse_mini.training.keys import epoch_batch_indices

__all__ = ["Feed", "open_feed", "check_data_source", "TokenData", "training_images", "base_images", "ImageEncoder"]


@dataclasses.dataclass
class Feed:
    """A stage's ``batch_fn``, the ``encode`` its step applies first (or None), and its ``close``."""

    batch_fn: Callable[[int], dict]
    encode: eqx.Module | None = None
    close: Callable[[], None] = lambda: None


def open_feed(cfg: MuseConfig, *, stage: str, tokenizer_runs: dict, rows: slice, batch_size: int, seed: int,
              run_dir: Path, progress: bool = True) -> Feed:
    """The feed ``cfg.data.resolved_feed`` names, for this process's ``rows`` of each batch.

    ``tokenizer_runs`` maps ``tokenizer_run`` (and for super-res ``highres_tokenizer_run``) to runs.
    """
    feed, n_rows = cfg.data.resolved_feed, rows.stop - rows.start
    if feed == "shards":
        return shard_feed(cfg, stage=stage, tokenizer_runs=tokenizer_runs, rows=n_rows, seed=seed,
                          cache_dir=run_dir.parent / "text-cache")
    if feed == "images":
        return image_feed(cfg, tokenizer_runs=tokenizer_runs, rows=n_rows, seed=seed)
    check_cache_size(cfg)
    data = cached_token_data(run_dir, cfg, tokenizer_runs, progress=progress)
    return Feed(lambda step: data.batch(epoch_batch_indices(len(data), batch_size, seed, step)[rows]))


def check_data_source(cfg: MuseConfig, tokenizer_run) -> None:
    """Refuse to train on other images than the base tokenizer was trained on, naming the override."""
    try:
        recorded = read_run_config(tokenizer_run)["metadata"].get("data") or {}
    except (FileNotFoundError, ValueError):
        return
    if cfg.data.tokens:  # token shards name their tokenizer runs (checked against the manifest)
        return
    fields = ("source", "image_column", "caption_column")
    differ = [f"data.{k}={recorded[k]}" for k in fields if k in recorded and recorded[k] != getattr(cfg.data, k)]
    if differ:
        raise ValueError(f"data.source: the tokenizer run {tokenizer_run} was trained on {recorded['source']!r}, "
                         f"not {cfg.data.source!r}; pass {' '.join(differ)}, or train a tokenizer on this data")


# --------------------------------------------------------------------------
# cache: everything in memory


def training_images(cfg: MuseConfig, n: int | None = None) -> tuple[np.ndarray, list[str]]:
    """The first ``n`` (default ``data.num_examples``; 0: all) high-res training images and captions.

    Shapes' train split, or any source :func:`~muse_mini.data.image_shards.open_image_shards` reads, all in memory.
    """
    n = cfg.data.num_examples if n is None else n
    size = cfg.highres_tokenizer.image_size
    if cfg.data.source == "shapes":
        if size != CANVAS:
            raise ValueError(f"highres_tokenizer.image_size: Shapes images are {CANVAS}px, got {size}")
        images, captions, _ = generate(n, seed=cfg.data.seed, split="train", paraphrase_prob=cfg.data.paraphrase_prob,
                                       kinds=cfg.data.kinds)
        return images, list(captions)
    reader = open_image_reader(cfg.data, size)
    try:
        pairs = [(s, r) for s, count in enumerate(reader.shards.counts) for r in range(count)][: n or None]
        return reader.read(pairs, fill=False)
    finally:
        reader.close()


def base_images(cfg: MuseConfig, images_hr: np.ndarray) -> np.ndarray:
    """The base stage's images: the high-res ones box-downsampled (2×2 mean)."""
    return downsample(images_hr, cfg.highres_tokenizer.image_size // cfg.tokenizer.image_size)


@dataclasses.dataclass
class TokenData:
    """Tokenised image-text pairs; ``caption_index`` points into ``captions``/``text``."""

    tokens: np.ndarray  # N×n_lo int32, base tokenizer
    caption_index: np.ndarray  # N int32
    captions: list[str]  # U distinct captions
    text: np.ndarray  # U×L×D float32, frozen encoder outputs
    text_mask: np.ndarray  # U×L bool
    hr_tokens: np.ndarray | None = None  # N×n_hi int32, high-res tokenizer

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, idx: np.ndarray) -> dict:
        cap = self.caption_index[idx]
        out = {"tokens": self.tokens[idx], "text": self.text[cap], "text_mask": self.text_mask[cap]}
        if self.hr_tokens is not None:
            out["hr_tokens"] = self.hr_tokens[idx]
        return out

    def save(self, path) -> None:
        """One ``.npz`` without pickles (captions as fixed-width unicode): loading runs no code."""
        arrays = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "captions"}
        arrays["captions"] = np.array(self.captions, dtype=np.str_).reshape(len(self.captions))
        tmp = Path(path).with_suffix(".tmp.npz")
        np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
        tmp.replace(path)

    @classmethod
    def load(cls, path) -> TokenData:
        try:
            with np.load(path, allow_pickle=False) as f:
                fields = {k: f[k] for k in f.files}
            fields["captions"] = [str(c) for c in fields["captions"]]
            return cls(**fields)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"data.npz: {path} is not a token cache this muse_mini reads ({e}); delete it and "
                             "rerun the stage, which rebuilds it") from None


def encode_captions(cfg: MuseConfig, captions: list[str], cache_dir=None):
    """``(unique, index_N, text_UxLxD, mask_UxL)``: each distinct caption embedded once (§2.1)."""
    unique = sorted(set(captions))
    lookup = {c: i for i, c in enumerate(unique)}
    index = np.array([lookup[c] for c in captions], dtype=np.int32)
    encoder = load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length)
    text, mask = EmbeddingCache(encoder, directory=cache_dir).encode(unique)
    return unique, index, np.asarray(text, np.float32), np.asarray(mask, bool)


def build_token_data(cfg: MuseConfig, tokenizer, highres_tokenizer=None, *, cache_dir=None,
                     progress: bool = True) -> TokenData:
    """Tokenise the training images with the frozen tokenizer(s) and embed the captions."""
    images_hr, captions = training_images(cfg)
    tokens = encode_images(tokenizer, base_images(cfg, images_hr), progress=progress)
    hr_tokens = None
    if highres_tokenizer is not None:
        hr_tokens = encode_images(highres_tokenizer, images_hr, progress=progress)
        hr_tokens = hr_tokens.reshape(len(hr_tokens), -1).astype(np.int32)
    unique, index, text, mask = encode_captions(cfg, captions, cache_dir)
    return TokenData(tokens=tokens.reshape(len(tokens), -1).astype(np.int32), caption_index=index,
                     captions=unique, text=text, text_mask=mask, hr_tokens=hr_tokens)


def cached_token_data(run_dir: Path, cfg: MuseConfig, tokenizer_runs: dict, progress: bool = True) -> TokenData:
    """``run_dir/data.npz``, built once per run (by process 0; the others read it)."""
    path, data = run_dir / "data.npz", None
    if is_main_process():
        if path.is_file():
            data = TokenData.load(path)
        else:
            highres_run = tokenizer_runs.get("highres_tokenizer_run")
            data = build_token_data(cfg, load_tokenizer(tokenizer_runs["tokenizer_run"]),
                                    highres_run and load_tokenizer(highres_run),
                                    cache_dir=run_dir.parent / "text-cache", progress=progress)
            run_dir.mkdir(parents=True, exist_ok=True)
            data.save(path)
    barrier(f"token data {path}")
    return data if data is not None else TokenData.load(path)


def check_cache_size(cfg: MuseConfig) -> None:
    """Refuse ``feed=cache`` for a dataset too large to hold in memory, saying what to use instead."""
    if cfg.data.source == "shapes":
        n = cfg.data.num_examples
    else:
        n = min(cfg.data.num_examples or np.inf, sum(open_image_shards(cfg.data).counts))
    if n > cfg.data.cache_max:
        raise ValueError(f"data.feed: 'cache' would hold all {n} examples in memory (data.cache_max="
                         f"{cfg.data.cache_max}); write token shards with `muse-mini tokenize` and set "
                         "data.tokens=SHARDS, or set data.feed=images")


# --------------------------------------------------------------------------
# shards: pre-tokenised


def _check_manifest(shards: TokenShards, tokenizer_runs: dict, cfg: MuseConfig) -> None:
    where = f"data.tokens: {shards.path}"
    for name, run in tokenizer_runs.items():
        made = shards.manifest.get(name)
        if made is None:
            raise ValueError(f"{where} has no {name.replace('_run', '')} ids; rerun `muse-mini tokenize` with "
                             f"--{name.replace('_', '-')} {run}")
        if os.path.realpath(made) != os.path.realpath(run):
            raise ValueError(f"{where} was tokenised with {name} {made}, not {run}; tokens of another "
                             "tokenizer mean nothing to this stage")
    text = shards.manifest.get("text", {})
    if (text.get("encoder"), text.get("max_length")) != (cfg.text.encoder, cfg.text.max_length):
        raise ValueError(f"{where} was made for text encoder {text.get('encoder')!r} (max_length "
                         f"{text.get('max_length')}), not {cfg.text.encoder!r} ({cfg.text.max_length})")


def _caption_table(cfg: MuseConfig, shards: TokenShards, order: ShardedOrder, cache_dir):
    """The distinct captions of this process's shards, embedded once (a small caption set)."""
    unique = sorted({c for s in order.shards for c in shards.captions(s)})
    encoder = load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length)
    text, mask = EmbeddingCache(encoder, directory=cache_dir).encode(unique)
    return {c: i for i, c in enumerate(unique)}, np.asarray(text, np.float32), np.asarray(mask, bool)


def shard_feed(cfg: MuseConfig, *, stage: str, tokenizer_runs: dict, rows: int, seed: int, cache_dir=None) -> Feed:
    """Stream ``cfg.data.tokens``: each process its own shards, one batch in memory."""
    shards = TokenShards(cfg.data.tokens)
    _check_manifest(shards, tokenizer_runs, cfg)
    order = ShardedOrder(shards.counts, rows, seed=seed, process_index=jax.process_index(),
                         process_count=jax.process_count(), window=cfg.data.shuffle_shards)
    fields = ["tokens"] + (["hr_tokens"] if stage == "superres" else [])
    fields += ["text", "text_mask"] if shards.text_mode == "shards" else ["captions"]
    table = functools.cache(lambda: _caption_table(cfg, shards, order, cache_dir))

    def batch_fn(step):
        got = shards.read(order(step), fields)
        out = {k: got[k].astype(np.int32) for k in ("tokens", "hr_tokens") if k in got}
        if "text" in got:
            out["text"], out["text_mask"] = got["text"].astype(np.float32), got["text_mask"]
        else:
            lookup, text, mask = table()
            index = np.array([lookup[str(c)] for c in got["captions"]])
            out["text"], out["text_mask"] = text[index], mask[index]
        return out

    prefetch = Prefetch(batch_fn)
    return Feed(prefetch, close=prefetch.close)


# --------------------------------------------------------------------------
# images: frozen encoders in the step


def downsample_jax(images_BxHxWx3, factor: int):
    """:func:`muse_mini.data.shapes.downsample` in JAX, bit for bit (2×2 mean rounded half up)."""
    if factor == 1:
        return images_BxHxWx3
    b, h, w, c = images_BxHxWx3.shape
    x = images_BxHxWx3.astype(jnp.int32).reshape(b, h // factor, factor, w // factor, factor, c)
    return ((x.sum((2, 4)) + factor * factor // 2) // (factor * factor)).astype(jnp.uint8)


class ImageEncoder(eqx.Module):
    """Inside the step: images → token ids, caption ids → text embeddings, with the frozen modules."""

    tokenizer: Any
    text: Any
    highres: Any | None
    factor: int = eqx.field(static=True)

    def __call__(self, batch: dict) -> dict:
        images, mask = batch["images"], batch["text_ids_mask"]
        b = images.shape[0]
        ids = jax.vmap(self.tokenizer.encode)(to_float(downsample_jax(images, self.factor)))
        text = jax.vmap(self.text)(batch["text_ids"], mask).astype(jnp.float32)
        out = {"tokens": ids.reshape(b, -1), "text": jnp.where(mask[..., None], text, 0.0), "text_mask": mask}
        if self.highres is not None:
            out["hr_tokens"] = jax.vmap(self.highres.encode)(to_float(images)).reshape(b, -1)
        return jax.lax.stop_gradient(out)


def image_feed(cfg: MuseConfig, *, tokenizer_runs: dict, rows: int, seed: int) -> Feed:
    """Stream images and captions; the step tokenises and embeds them (``data.feed=images``)."""
    reader = open_image_reader(cfg.data, cfg.highres_tokenizer.image_size, rows=rows, seed=seed)
    tokenizers = {name: load_tokenizer(run) for name, run in tokenizer_runs.items()}
    text_encoder = load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length)
    encode = ImageEncoder(tokenizers["tokenizer_run"], text_encoder.model, tokenizers.get("highres_tokenizer_run"),
                          cfg.highres_tokenizer.image_size // cfg.tokenizer.image_size)

    def batch_fn(step):
        images, captions = reader(step)
        ids, mask = text_encoder.tokenize(captions)
        return {"images": images, "text_ids": ids, "text_ids_mask": mask}

    prefetch = Prefetch(batch_fn)

    def close():
        prefetch.close()
        reader.close()

    return Feed(prefetch, encode, close)
