"""Image–text data as Hugging Face ``datasets`` (Muse §3, §4.1): the Shapes world and any other source.

Both come out as a ``datasets.Dataset`` with an ``image`` and a ``caption`` column, so
training code sees one format. The Shapes contract is ``docs/shapes.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from muse_mini.data import shapes
from muse_mini.hub import HUB_PROBE_TIMEOUT_S, hub_offline

# Bump when the generator's output changes, so stale on-disk caches are not reused.
SHAPES_DATA_VERSION = 1

_OBJECT_FEATURES = {
    "colour": datasets.Value("string"),
    "shape": datasets.Value("string"),
    "cx": datasets.Value("float32"),
    "cy": datasets.Value("float32"),
    "size": datasets.Value("int32"),
}
SHAPES_FEATURES = datasets.Features({
    "image": datasets.Image(),
    "caption": datasets.Value("string"),
    "kind": datasets.Value("string"),
    "objects": [_OBJECT_FEATURES],  # a list of structs (datasets.List on datasets >= 4)
})


def shapes_dataset(n: int, *, split: str = "train", seed: int = 0, resolution: int = 64,
                   start: int = 0, paraphrase_prob: float = 0.0,
                   cache_dir: str | os.PathLike | None = None) -> datasets.Dataset:
    """Shapes samples ``start .. start + n - 1`` as a ``datasets.Dataset``.

    Columns ``image``, ``caption``, ``kind`` and ``objects`` (in 64×64 coordinates). With
    ``cache_dir`` it is saved once under a name made of the arguments and reloaded.
    """
    args = dict(n=n, split=split, seed=seed, resolution=resolution, start=start,
                paraphrase_prob=paraphrase_prob, version=SHAPES_DATA_VERSION)
    path = None
    if cache_dir is not None:
        key = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:10]
        path = Path(cache_dir) / f"shapes_{split}_n{n}_seed{seed}_r{resolution}_{key}"
        if (path / "dataset_info.json").exists():
            return datasets.load_from_disk(str(path))
    images, captions, scenes = shapes.generate(n, seed=seed, split=split, start=start,
                                               paraphrase_prob=paraphrase_prob,
                                               resolution=resolution)
    ds = datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(img) for img in images],
            "caption": captions,
            "kind": [s.kind for s in scenes],
            "objects": [[{"colour": o.colour, "shape": o.shape, "cx": o.cx, "cy": o.cy,
                          "size": o.size} for o in s.objects] for s in scenes],
        },
        features=SHAPES_FEATURES,
    )
    if path is not None:
        ds.save_to_disk(str(path))
        ds = datasets.load_from_disk(str(path))  # memory-mapped, like a cache hit
    return ds


# --------------------------------------------------------------------------
# Any image–text dataset
# --------------------------------------------------------------------------

_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
LOCAL_SOURCES = ("a webdataset directory or .tar shards, a .parquet file or a directory of them, "
                 "an imagefolder directory with metadata.jsonl or metadata.csv, or a save_to_disk directory")


def _not_found(source, why: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"data.source {str(source)!r} is neither an existing local file or directory nor a reachable "
        f"Hugging Face hub dataset ({why}); local sources are {LOCAL_SOURCES}; "
        "a hub name needs network (unset HF_HUB_OFFLINE)")


def _load_hub(source: str, split: str, kwargs: dict) -> datasets.Dataset:
    """A hub dataset, or a one-line FileNotFoundError within seconds (not half a minute of retries)."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub import HfApi

    failures = (ConnectionError, DatasetNotFoundError, FileNotFoundError)
    if hub_offline("HF_DATASETS_OFFLINE", read_at_import=bool(datasets.config.HF_HUB_OFFLINE)):
        if not datasets.config.HF_HUB_OFFLINE:  # set after import: datasets would still go online
            raise _not_found(source, "HF_HUB_OFFLINE is set") from None
        try:
            return datasets.load_dataset(source, split=split, **kwargs)  # the cache only: no network
        except failures:
            raise _not_found(source, "HF_HUB_OFFLINE is set and it is not in the datasets cache") from None
    try:
        HfApi().dataset_info(source, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as e:  # no network, no such repository, HTTP error: the hub cannot serve it
        raise _not_found(source, f"the hub answered {type(e).__name__}") from None
    try:
        return datasets.load_dataset(source, split=split, **kwargs)
    except failures as e:
        raise _not_found(source, f"loading it failed with {type(e).__name__}") from None


def load_source(source, split: str, cache_dir) -> datasets.Dataset:
    """``source`` as a memory-mapped Arrow ``Dataset``: a parquet file or folder, an imagefolder,
    a ``save_to_disk`` folder, or a hub name (downloaded to the ``datasets`` cache, never into memory)."""
    if source is None or (isinstance(source, str) and not source.strip()):
        # Path("") is the current directory: the paper presets' empty source would read it.
        raise ValueError(f"data.source: the preset has no training data; set data.source=PATH ({LOCAL_SOURCES}, "
                         "or a Hugging Face hub dataset name); see docs/real_data.md")
    path = Path(source)
    kwargs = {"cache_dir": str(cache_dir)} if cache_dir is not None else {}
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"source file must be a .parquet file, got {str(path)!r}")
        return datasets.load_dataset("parquet", data_files={split: str(path)}, split=split,
                                     **kwargs)
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise ValueError(f"split {split!r} not in {str(path)!r}; available: {list(ds)}")
                ds = ds[split]
            return ds
        parquet = sorted(str(p) for p in path.rglob("*.parquet"))
        if parquet:
            return datasets.load_dataset("parquet", data_files={split: parquet}, split=split,
                                         **kwargs)
        # imagefolder puts every file in "train" unless the folder has split subfolders
        return datasets.load_dataset("imagefolder", data_dir=str(path), split=split, **kwargs)
    looks_local = not isinstance(source, str) or source.startswith(".") or (
        path.parent != Path(".") and path.parent.is_dir())  # e.g. "runs/typo"
    if not looks_local and _HUB_NAME.fullmatch(source):
        # Only reached for a name that is not a local path: this touches the network.
        return _load_hub(source, split, kwargs)
    raise _not_found(source, "no such path" if looks_local else "not a hub name either")


def resize_center_crop(img: Image.Image, image_size: int, center_crop: bool = True) -> Image.Image:
    """RGB ``image_size``² image: shorter side resized to ``image_size`` then the
    centre cropped (``center_crop=True``), or the whole image squashed."""
    if img.mode in ("RGBA", "LA", "P"):  # composite transparency onto white, not black
        rgba = img.convert("RGBA")
        img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img.alpha_composite(rgba)
    img = img.convert("RGB")
    if not center_crop:
        return img.resize((image_size, image_size), Image.Resampling.BICUBIC)
    w, h = img.size
    scale = image_size / min(w, h)
    new_w, new_h = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
    return img.crop((left, top, left + image_size, top + image_size))


def load_image_text_dataset(source, *, image_column: str = "image",
                            caption_column: str = "caption", image_size: int = 64,
                            split: str = "train", center_crop: bool = True,
                            cache_dir: str | os.PathLike | None = None) -> datasets.Dataset:
    """Any image–text ``source`` as ``image`` / ``caption`` columns, ``image_size`` pixels square.

    ``source``: an imagefolder (captions in ``metadata.csv``/``.jsonl``), parquet, a
    ``save_to_disk`` folder or a hub name (the only case that uses the network).
    A caption list (COCO) keeps its first entry; a missing column is a ValueError
    that lists the available ones.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    ds = load_source(source, split, cache_dir)
    for role, column in (("image_column", image_column), ("caption_column", caption_column)):
        if column not in ds.column_names:
            raise ValueError(f"{role} {column!r} not found in {str(source)!r}; "
                             f"available columns: {ds.column_names}")
    ds = ds.select_columns(list(dict.fromkeys([image_column, caption_column])))
    if not isinstance(ds.features[image_column], datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image())  # paths or {bytes, path} structs

    def transform(batch):
        captions = [c[0] if isinstance(c, (list, tuple)) else c for c in batch[caption_column]]
        return {"image": [resize_center_crop(im, image_size, center_crop)
                          for im in batch[image_column]],
                "caption": [str(c) for c in captions]}

    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    return ds.map(transform, batched=True, batch_size=64, remove_columns=ds.column_names,
                  features=features)


def to_numpy_batch(ds: datasets.Dataset, start: int = 0, stop: int | None = None
                   ) -> tuple[np.ndarray, list[str]]:
    """Rows ``start:stop`` as ``(images uint8 [B, H, W, 3], captions)``."""
    rows = ds.select_columns(["image", "caption"]).with_format("numpy")[start:stop]
    images_BxHxWx3 = np.stack([np.asarray(im, dtype=np.uint8) for im in rows["image"]])
    return images_BxHxWx3, [str(c) for c in rows["caption"]]
