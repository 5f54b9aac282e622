"""How a transformer stage gets its batches: a cache in memory, streamed token shards, or images.

``data.feed`` (:class:`muse_mini.config.DataConfig`) picks one:

- ``cache``: every image tokenised once into the run's ``data.npz`` and held
  in memory (Shapes and other small sets; refused above ``data.cache_max``);
- ``shards``: pre-tokenised shards (``muse-mini tokenize``) read a batch at a
  time, each process its own shards (:mod:`muse_mini.data.stream`);
- ``images``: images and captions streamed, and the frozen tokenizers and
  text encoder run inside the training step (Muse §2.1-2.2: they are frozen,
  so this is the same data, paid for at every step instead of once). The
  frozen modules ride in the batch under :data:`FROZEN`; the placement puts
  them on the mesh once (the T5 encoder split like the model,
  :func:`muse_mini.parallel.rules.frozen_shardings`).

Every feed's ``batch_fn(step)`` is pure in the step, so runs resume exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.config import DataConfig, MuseConfig
from muse_mini.data.image_shards import ImageBatches, open_image_shards
from muse_mini.data.stream import Prefetch, ShardedOrder
from muse_mini.data.token_shards import TokenShards
from muse_mini.models.codec import decode_ids_uint8
from muse_mini.models.images import to_float
from muse_mini.models.text.cache import EmbeddingCache
from muse_mini.models.text.encoder import load_text_encoder
from muse_mini.runs.layout import read_run_config
from muse_mini.runs.load import load_tokenizer
from muse_mini.training.keys import epoch_batch_indices
from muse_mini.training.placement import FROZEN

__all__ = ["Feed", "make_feed", "loss_for_feed", "data_from_tokenizer", "FROZEN"]


@dataclasses.dataclass
class Feed:
    """A stage's ``batch_fn`` and what to call when training stops."""

    batch_fn: Callable[[int], dict]
    close: Callable[[], None] = lambda: None


def data_from_tokenizer(cfg: MuseConfig, tokenizer_run) -> MuseConfig:
    """``cfg`` with the data source its base tokenizer run was trained on.

    A stage given only ``--tokenizer-run`` trains on that tokenizer's data:
    the default source (``shapes``) is replaced by the recorded one; an
    explicit other source is refused rather than silently mixed.
    """
    try:
        recorded = read_run_config(tokenizer_run)["metadata"].get("data") or {}
    except (FileNotFoundError, ValueError):
        return cfg
    source = recorded.get("source")
    if source is None or source == cfg.data.source or cfg.data.tokens:
        return cfg
    if cfg.data.source != DataConfig().source:
        raise ValueError(f"data.source: {cfg.data.source!r} differs from {source!r}, the data the tokenizer run "
                         f"{tokenizer_run} was trained on; pass data.source={source} or train a tokenizer on "
                         "the new data")
    keep = {k: recorded[k] for k in ("source", "image_column", "caption_column") if k in recorded}
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **keep))


def _order(cfg: MuseConfig, counts, rows: int, seed: int) -> ShardedOrder:
    return ShardedOrder(counts, rows, seed=seed, process_index=jax.process_index(),
                        process_count=jax.process_count(), window=cfg.data.shuffle_shards)


# --------------------------------------------------------------------------
# cache: everything in memory


def cache_feed(cached_data: Callable, rows: slice, batch_size: int, seed: int) -> Feed:
    """Today's small-data feed: ``cached_data()`` (the run's ``data.npz``) gathered by index."""

    def batch_fn(step):
        data = cached_data()
        return data.batch(epoch_batch_indices(len(data), batch_size, seed, step)[rows])

    return Feed(batch_fn)


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


def _check_manifest(shards: TokenShards, tokenizer_runs: dict, stage: str, cfg: MuseConfig) -> None:
    where = f"data.tokens: {shards.path}"
    for name, run in tokenizer_runs.items():
        made = shards.manifest.get(name)
        if made is None:
            raise ValueError(f"{where} has no {name.replace('_run', '')} ids; rerun `muse-mini tokenize` with "
                             f"--{name.replace('_', '-')} {run}")
        if os.path.realpath(made) != os.path.realpath(run):
            raise ValueError(f"{where} was tokenised with {name} {made}, not {run}; tokens of another "
                             "tokenizer mean nothing to this stage")
    if stage == "superres" and cfg.superres.lowres_input == "pixels" and "lowres_images" not in shards.fields:
        raise ValueError(f"{where} has no decoded low-res images, which superres.lowres_input=pixels needs; "
                         "tokenize again with that setting")
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


def shard_feed(cfg: MuseConfig, *, stage: str, tokenizer_runs: dict, rows: int, seed: int,
               cache_dir=None) -> Feed:
    """Stream ``cfg.data.tokens``: each step reads its rows, nothing else stays in memory."""
    shards = TokenShards(cfg.data.tokens)
    _check_manifest(shards, tokenizer_runs, stage, cfg)
    order = _order(cfg, shards.counts, rows, seed)
    fields = ["tokens"] + (["hr_tokens"] if stage == "superres" else [])
    if stage == "superres" and cfg.superres.lowres_input == "pixels":
        fields.append("lowres_images")
    table = functools.cache(lambda: _caption_table(cfg, shards, order, cache_dir))
    fields += ["text", "text_mask"] if shards.text_mode == "shards" else ["captions"]

    def batch_fn(step):
        got = shards.read(order(step), fields)
        out = {"tokens": got["tokens"].astype(np.int32)}
        if "hr_tokens" in got:
            out["hr_tokens"] = got["hr_tokens"].astype(np.int32)
        if "lowres_images" in got:
            out["lowres_images"] = got["lowres_images"]
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


def encode_in_step(batch: dict, *, factor: int, stage: str, lowres_pixels: bool) -> dict:
    """Inside the step: images → token ids, caption ids → text embeddings, with the frozen modules."""
    frozen = batch[FROZEN]
    images = batch["images"]
    lowres = downsample_jax(images, factor)
    b = images.shape[0]
    ids = jax.vmap(frozen["tokenizer"].encode)(to_float(lowres))
    text = jax.vmap(frozen["text"])(batch["text_ids"], batch["text_ids_mask"]).astype(jnp.float32)
    mask = batch["text_ids_mask"]
    out = {"tokens": ids.reshape(b, -1), "text": jnp.where(mask[..., None], text, 0.0), "text_mask": mask}
    if stage == "superres":
        out["hr_tokens"] = jax.vmap(frozen["highres"].encode)(to_float(images)).reshape(b, -1)
        if lowres_pixels:
            out["lowres_images"] = decode_ids_uint8(frozen["tokenizer"], ids)
    return jax.lax.stop_gradient(out)


def image_feed(cfg: MuseConfig, *, stage: str, tokenizer_runs: dict, rows: int, seed: int) -> Feed:
    """Stream images and captions; the step tokenises and embeds them (``data.feed=images``)."""
    source = open_image_shards(cfg.data)
    size = cfg.highres_tokenizer.image_size
    reader = ImageBatches(source, _order(cfg, source.counts, rows, seed), size,
                          workers=cfg.data.workers, on_error=cfg.data.on_error)
    tokenizers = {name: load_tokenizer(run) for name, run in tokenizer_runs.items()}
    encoder = load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length)
    frozen = {"tokenizer": tokenizers["tokenizer_run"], "text": encoder.model,
              "highres": tokenizers.get("highres_tokenizer_run")}

    def batch_fn(step):
        images, captions = reader(step)
        ids, mask = encoder.tokenize(captions)
        return {"images": images, "text_ids": ids, "text_ids_mask": mask, FROZEN: frozen}

    prefetch = Prefetch(batch_fn)

    def close():
        prefetch.close()
        reader.close()

    return Feed(prefetch, close)


def loss_for_feed(cfg: MuseConfig, stage: str, loss_fn: Callable) -> Callable:
    """``loss_fn`` as the feed's batches need it: with ``feed=images``, encode them first."""
    if cfg.data.resolved_feed != "images":
        return loss_fn
    factor = cfg.highres_tokenizer.image_size // cfg.tokenizer.image_size
    lowres_pixels = cfg.superres.lowres_input == "pixels"

    def loss_on_images(model, batch, key):
        return loss_fn(model, encode_in_step(batch, factor=factor, stage=stage, lowres_pixels=lowres_pixels), key)

    return loss_on_images


def make_feed(cfg: MuseConfig, *, stage: str, tokenizer_runs: dict, rows: slice, batch_size: int, seed: int,
              cached_data: Callable, cache_dir=None) -> Feed:
    """The feed ``cfg.data.resolved_feed`` names, for this process's ``rows`` of each batch."""
    feed = cfg.data.resolved_feed
    n_rows = rows.stop - rows.start
    if feed == "shards":
        return shard_feed(cfg, stage=stage, tokenizer_runs=tokenizer_runs, rows=n_rows, seed=seed,
                          cache_dir=cache_dir)
    if feed == "images":
        return image_feed(cfg, stage=stage, tokenizer_runs=tokenizer_runs, rows=n_rows, seed=seed)
    return cache_feed(cached_data, rows, batch_size, seed)
