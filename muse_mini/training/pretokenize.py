"""``muse-mini tokenize``: every training image through the frozen tokenizers once, into token shards.

The tokenizers are frozen after §2.2, so the transformer stages need only token ids.
Each image is encoded by the base tokenizer (box-downsampled to its size) and, when
given, the high-res one, into :mod:`muse_mini.data.token_shards`. Process ``p`` of
``P`` takes input shards ``p, p + P, …``; output shard ``i`` holds input shard ``i``
and appears by an atomic rename, so a rerun skips finished shards. Above
``data.text_cache_max`` examples each shard also stores its text embeddings (float16).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from muse_mini.config import MuseConfig
from muse_mini.data.image_shards import open_image_reader
from muse_mini.data.shapes import downsample
from muse_mini.data.stream import process_shards
from muse_mini.data.token_shards import MANIFEST, shard_dir_name, write_manifest, write_shard
from muse_mini.models.codec import encode_batch
from muse_mini.models.text.encoder import load_text_encoder
from muse_mini.parallel.hosts import barrier, is_main_process
from muse_mini.runs.load import load_tokenizer

__all__ = ["tokenize_dataset", "TOKENIZE_FILE"]

TOKENIZE_FILE = "tokenize.json"  # what the shards were made from, checked on resume


def _local_encoder(vqgan):
    """``encode(images uint8) -> ids``, split over this process's devices (data-parallel)."""
    devices = jax.local_devices()
    if len(devices) == 1:
        return lambda x: np.asarray(encode_batch(vqgan, x))
    mesh = Mesh(np.array(devices), ("batch",))
    rows = NamedSharding(mesh, PartitionSpec("batch"))
    placed = jax.device_put(vqgan, NamedSharding(mesh, PartitionSpec()))

    def encode(x):
        pad = -len(x) % len(devices)
        xp = np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x
        return np.asarray(encode_batch(placed, jax.device_put(xp, rows)))[: len(x)]

    return encode


def _id_dtype(codebook_size: int):
    return np.uint16 if codebook_size <= np.iinfo(np.uint16).max + 1 else np.int32


def _meta(cfg: MuseConfig, source, tokenizer_run, highres_tokenizer_run, text_mode: str) -> dict:
    return {
        "source": str(source),
        "tokenizer_run": str(Path(tokenizer_run).resolve()),
        "highres_tokenizer_run": None if highres_tokenizer_run is None else str(Path(highres_tokenizer_run).resolve()),
        "image_size": cfg.highres_tokenizer.image_size,
        "text": {"mode": text_mode, "encoder": cfg.text.encoder, "max_length": cfg.text.max_length},
        "data": {k: v for k, v in dataclasses.asdict(cfg.data).items()
                 if k in ("source", "num_examples", "seed", "image_column", "caption_column", "kinds",
                          "paraphrase_prob", "rows_per_shard")},
    }


def _check_resume(out: Path, meta: dict) -> None:
    path = out / TOKENIZE_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(meta)):
            diff = sorted(k for k in set(old) | set(meta) if old.get(k) != json.loads(json.dumps(meta)).get(k))
            raise ValueError(f"out: {out} holds shards made from other inputs (differs in {diff}); "
                             "use a new --out, or delete it to start over")
    elif is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(meta, indent=2))


def _encode_chunk(images, captions, tok, hr, encode, encode_hr, factor: int, encoder) -> dict[str, np.ndarray]:
    """One chunk's shard fields: low-res ids, high-res ids, captions, text embeddings."""
    lowres = downsample(images, factor) if factor > 1 else images
    ids = encode(lowres)
    fields = {"tokens": ids.reshape(len(ids), -1).astype(_id_dtype(tok.quantizer.codebook_size)),
              "captions": np.array(captions, dtype=np.str_)}
    if encode_hr is not None:
        hr_ids = encode_hr(images)
        fields["hr_tokens"] = hr_ids.reshape(len(ids), -1).astype(_id_dtype(hr.quantizer.codebook_size))
    if encoder is not None:
        text, mask = encoder.encode(captions)
        fields["text"], fields["text_mask"] = text.astype(np.float16), mask
    return fields


def tokenize_dataset(cfg: MuseConfig, out, *, tokenizer_run, highres_tokenizer_run=None,
                     chunk: int = 256, progress: bool = True) -> dict:
    """Write ``cfg.data.source`` as token shards under ``out``; returns the manifest.

    ``tokenizer_run`` is the finished base tokenizer; ``highres_tokenizer_run``
    (optional) adds the high-res ids the super-res stage trains on.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a directory")
    reader = open_image_reader(cfg.data, cfg.highres_tokenizer.image_size)
    counts = reader.shards.counts
    text_mode = "cache" if sum(counts) <= cfg.data.text_cache_max else "shards"
    meta = _meta(cfg, cfg.data.source, tokenizer_run, highres_tokenizer_run, text_mode)
    _check_resume(out, meta)
    barrier(f"tokenize {out}")

    tok = load_tokenizer(tokenizer_run)
    hr = load_tokenizer(highres_tokenizer_run) if highres_tokenizer_run is not None else None
    size = cfg.highres_tokenizer.image_size
    factor = size // tok.image_size
    if factor * tok.image_size != size or (hr is not None and hr.image_size != size):
        raise ValueError(f"tokenizer_run: its image size {tok.image_size} must divide highres_tokenizer.image_size "
                         f"{size}{'' if hr is None else f' (the high-res tokenizer is {hr.image_size})'}")
    encode, encode_hr = _local_encoder(tok), (_local_encoder(hr) if hr is not None else None)
    encoder = load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length) if text_mode == "shards" else None

    mine = process_shards(len(counts), jax.process_index(), jax.process_count())
    todo = [s for s in mine if not (out / shard_dir_name(s)).is_dir()]
    bar = tqdm(total=sum(counts[s] for s in todo), unit="img", desc=f"tokenize {out.name}", disable=not progress)
    try:
        for s in todo:
            parts: dict[str, list[np.ndarray]] = {}
            for start in range(0, counts[s], chunk):
                pairs = [(s, r) for r in range(start, min(start + chunk, counts[s]))]
                images, captions = reader.read(pairs, fill=False)
                bar.update(len(pairs))
                if not len(images):
                    continue
                fields = _encode_chunk(images, captions, tok, hr, encode, encode_hr, factor, encoder)
                for k, v in fields.items():
                    parts.setdefault(k, []).append(v)
            if parts:
                width = max(p.dtype.itemsize for p in parts["captions"]) // 4
                parts["captions"] = [p.astype(f"<U{width}") for p in parts["captions"]]
                write_shard(out, s, {k: np.concatenate(v) for k, v in parts.items()})
    finally:
        bar.close()
        reader.close()
    barrier(f"tokenized {out}")
    if is_main_process():
        manifest = write_manifest(out, meta)
    barrier(f"manifest {out}")
    return manifest if is_main_process() else json.loads((out / MANIFEST).read_text())
