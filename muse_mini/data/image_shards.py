"""Image–caption data read a batch at a time: Shapes, webdataset shards or an Arrow table.

A source is shards of known sizes with ``read(shard, row)``; :func:`open_image_reader`
turns it into uint8 images and captions, decoded in a thread pool (Pillow releases
the GIL, and no process holding a JAX runtime is forked). Bad samples and shards
follow ``data.on_error``: ``"skip"`` warns naming shard and key, ``"raise"`` stops
with a one-line :class:`DataError`.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import tarfile
import threading
import warnings
from collections.abc import Sequence

import jax
import numpy as np
from PIL import Image

from muse_mini.data import shapes
from muse_mini.data.sources import load_source, resize_center_crop
from muse_mini.data.stream import ShardedOrder
from muse_mini.data.webdataset import (
    CAPTION_EXTENSIONS, IMAGE_EXTENSIONS, Shard, expand_shards, looks_like_webdataset,
)

__all__ = ["DataError", "DataWarning", "WebDatasetImages", "ArrowImages", "ShapesImages", "open_image_shards",
           "open_image_reader", "ImageBatches", "ON_ERROR"]

ON_ERROR = ("skip", "raise")


class DataError(ValueError):
    """A sample or shard that cannot be read, named by shard and key."""


class DataWarning(UserWarning):
    """A sample or shard skipped under ``data.on_error="skip"``."""


def _problem(on_error: str, message: str) -> None:
    if on_error == "raise":
        raise DataError(f"{message} (set data.on_error=skip to skip such samples)")
    warnings.warn(f"{message}; skipped (data.on_error=skip)", DataWarning, stacklevel=3)


class WebDatasetImages:
    """img2dataset's tar shards (:mod:`muse_mini.data.webdataset`) as a sharded source."""

    def __init__(self, source, *, on_error: str = "skip"):
        paths = expand_shards(source)
        if not paths:
            raise FileNotFoundError(f"data.source: no .tar shards in {str(source)!r}")
        self.shards = []
        for path in paths:
            shard = Shard(path)
            if not shard.exists():
                _problem(on_error, f"data.source: shard {path} is missing")
            elif not tarfile.is_tarfile(path):
                _problem(on_error, f"data.source: shard {path} is not a tar file")
            else:
                self.shards.append(shard)
        if not self.shards:
            raise DataError(f"data.source: none of the {len(paths)} shards of {str(source)!r} is a tar file")
        self.source = str(source)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.shards]

    @property
    def counts(self) -> list[int]:
        return [len(s) for s in self.shards]

    def read(self, shard: int, row: int):
        """``(key, image, caption)``: raw image bytes and the ``txt`` (or ``json`` caption) text."""
        key, members = self.shards[shard].read(row)
        image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
        caption = next((members[e].decode("utf-8", "replace") for e in CAPTION_EXTENSIONS if e in members), None)
        if caption is None and "json" in members:
            try:
                caption = json.loads(members["json"]).get("caption")
            except ValueError:
                caption = None
        return key, image, caption


class ArrowImages:
    """A memory-mapped ``datasets.Dataset`` (parquet, imagefolder, ``save_to_disk``, a hub
    dataset) cut into shards of ``rows_per_shard`` rows."""

    def __init__(self, ds, *, image_column: str = "image", caption_column: str = "caption",
                 rows_per_shard: int = 1000, source: str = ""):
        import datasets

        for role, column in (("data.image_column", image_column), ("data.caption_column", caption_column)):
            if column not in ds.column_names:
                raise ValueError(f"{role}: {column!r} is not a column of {source!r}; "
                                 f"available columns: {ds.column_names}")
        if isinstance(ds.features[image_column], datasets.Image):
            ds = ds.cast_column(image_column, datasets.Image(decode=False))  # bytes: decode in the pool
        self.ds, self.image_column, self.caption_column = ds, image_column, caption_column
        self.rows_per_shard, self.source = rows_per_shard, source
        n = len(ds)
        self.counts = [min(rows_per_shard, n - s) for s in range(0, n, rows_per_shard)]
        self.names = [f"rows {s}..{s + c - 1}" for s, c in zip(range(0, n, rows_per_shard), self.counts)]

    def read(self, shard: int, row: int):
        i = shard * self.rows_per_shard + row
        item = self.ds[i]
        image, caption = item[self.image_column], item[self.caption_column]
        if isinstance(caption, (list, tuple)):  # several captions per image (COCO): the first
            caption = caption[0] if caption else None
        if isinstance(image, dict):  # {"bytes", "path"} of datasets.Image(decode=False)
            image = image.get("bytes") or (open(image["path"], "rb").read() if image.get("path") else None)
        return str(i), image, None if caption is None else str(caption)


class ShapesImages:
    """The Shapes train split cut into shards, each drawn when first read (scenes are a
    function of their index)."""

    def __init__(self, data_cfg, *, rows_per_shard: int = 1000):
        self.cfg, self.rows_per_shard, self.source = data_cfg, rows_per_shard, "shapes"
        n = data_cfg.num_examples
        self.counts = [min(rows_per_shard, n - s) for s in range(0, n, rows_per_shard)]
        self.names = [f"shapes {s}..{s + c - 1}" for s, c in zip(range(0, n, rows_per_shard), self.counts)]
        self._lock = threading.Lock()
        self._cached: tuple[int, np.ndarray, list[str]] | None = None

    def _shard(self, shard: int):
        with self._lock:
            if self._cached is None or self._cached[0] != shard:
                images, captions, _ = shapes.generate(
                    self.counts[shard], seed=self.cfg.seed, split="train", start=shard * self.rows_per_shard,
                    kinds=self.cfg.kinds, paraphrase_prob=self.cfg.paraphrase_prob)
                self._cached = (shard, images, list(captions))
            return self._cached

    def read(self, shard: int, row: int):
        _, images, captions = self._shard(shard)
        return str(shard * self.rows_per_shard + row), images[row], captions[row]


def open_image_shards(data_cfg, *, rows_per_shard: int | None = None):
    """The sharded source ``data_cfg.source`` names: Shapes, a webdataset, or anything ``datasets`` loads."""
    source = data_cfg.source
    rows_per_shard = rows_per_shard or data_cfg.rows_per_shard
    if not str(source).strip():
        raise ValueError("data.source: no training data is set (the paper presets name none); set "
                         "data.source=PATH to a webdataset folder of .tar shards, a parquet file or folder, "
                         "an imagefolder with metadata.jsonl, or a hub dataset name (docs/real_data.md)")
    if source == "shapes":
        return ShapesImages(data_cfg, rows_per_shard=rows_per_shard)
    if looks_like_webdataset(source):
        return WebDatasetImages(source, on_error=data_cfg.on_error)
    ds = load_source(source, "train", None)
    return ArrowImages(ds, image_column=data_cfg.image_column, caption_column=data_cfg.caption_column,
                       rows_per_shard=rows_per_shard, source=str(source))


def open_image_reader(data_cfg, image_size: int, *, rows: int | None = None, seed: int = 0) -> "ImageBatches":
    """``data_cfg.source`` as ``image_size`` images: with ``rows``, ``reader(step)`` gives this process's
    ``rows`` examples of each step (:class:`~muse_mini.data.stream.ShardedOrder`); without, ``reader.read(pairs)``."""
    source = open_image_shards(data_cfg)
    order = None if rows is None else ShardedOrder(
        source.counts, rows, seed=seed, process_index=jax.process_index(), process_count=jax.process_count(),
        window=data_cfg.shuffle_shards)
    return ImageBatches(source, order, image_size, workers=data_cfg.workers, on_error=data_cfg.on_error)


def _decode(image, size: int, center_crop: bool) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.shape == (size, size, 3) and image.dtype == np.uint8:
            return image
        image = Image.fromarray(image)
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected image bytes or a PIL image, got {type(image).__name__}")
    image.load()
    return np.asarray(resize_center_crop(image, size, center_crop), dtype=np.uint8)


class ImageBatches:
    """``step -> (images uint8 (rows, S, S, 3), captions)``, pure in the step; a bad sample is
    replaced by the batch's next good one, so the batch keeps its shape."""

    def __init__(self, shards, order: ShardedOrder | None, image_size: int, *, workers: int = 0,
                 on_error: str = "skip", center_crop: bool = True):
        if on_error not in ON_ERROR:
            raise ValueError(f"data.on_error: expected one of {ON_ERROR}, got {on_error!r}")
        self.shards, self.order, self.image_size = shards, order, image_size
        self.on_error, self.center_crop = on_error, center_crop
        self.workers = workers or os.cpu_count() or 1
        self._pool = None

    @property
    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="muse-decode")
        return self._pool

    def _one(self, pair) -> tuple[np.ndarray, str] | str:
        shard, row = int(pair[0]), int(pair[1])
        name = self.shards.names[shard]
        try:
            key, image, caption = self.shards.read(shard, row)
        except Exception as err:  # noqa: BLE001 - a worker must report, never crash the run
            return f"data: shard {name} row {row} cannot be read ({type(err).__name__}: {err})"
        if image is None:
            return f"data: shard {name} key {key} has no image"
        if caption is None or not caption.strip():
            return f"data: shard {name} key {key} has no caption"
        try:
            return _decode(image, self.image_size, self.center_crop), caption
        except Exception as err:  # noqa: BLE001
            return f"data: shard {name} key {key} is not a readable image ({type(err).__name__})"

    def read(self, pairs: Sequence, *, fill: bool = True) -> tuple[np.ndarray, list[str]]:
        """Decode the samples ``pairs`` (``(shard, row)`` rows); bad ones are replaced by the
        batch's next good sample (``fill``) or dropped."""
        results = list(self.pool.map(self._one, pairs))
        good = [i for i, r in enumerate(results) if not isinstance(r, str)]
        for r in results:
            if isinstance(r, str):
                _problem(self.on_error, r)
        if not fill:
            images = [results[i][0] for i in good]
            return (np.stack(images) if images else np.zeros((0, self.image_size, self.image_size, 3), np.uint8),
                    [results[i][1] for i in good])
        if not good:
            raise DataError(f"data: no readable sample in a batch of {len(pairs)} from {self.shards.source!r}")
        filled = [results[i] if not isinstance(results[i], str) else results[next((g for g in good if g > i), good[0])]
                  for i in range(len(results))]
        return np.stack([r[0] for r in filled]), [r[1] for r in filled]

    def __call__(self, step: int) -> tuple[np.ndarray, list[str]]:
        return self.read(self.order(step))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
