"""Pre-tokenised training data (§2.1-2.2: frozen encoders, so each image is tokenised once).

``SHARDS/manifest.json`` lists fields, shard sizes, tokenizer runs and the text mode;
``SHARDS/00000/`` holds ``tokens.npy`` (low-res ids), ``hr_tokens.npy`` (high-res ids),
``captions.npy`` and, in text mode "shards", ``text.npy``/``text_mask.npy``. Rows are
read with ``os.pread`` (a memory map would keep every touched page resident), and a
shard folder appears by an atomic rename, so an interrupted ``tokenize`` resumes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "MANIFEST", "TokenShards", "write_shard", "write_manifest", "is_token_shards",
           "shard_dir_name"]

FORMAT = "muse-mini-token-shards"
VERSION = 1
MANIFEST = "manifest.json"


def shard_dir_name(index: int) -> str:
    return f"{index:05d}"


def is_token_shards(path: str | os.PathLike) -> bool:
    return bool(str(path)) and (Path(path) / MANIFEST).is_file()


def write_shard(root: str | os.PathLike, index: int, fields: Mapping[str, np.ndarray]) -> Path:
    """Write one shard's arrays to ``root/NNNNN`` atomically (a temporary folder, then a rename)."""
    counts = {k: len(v) for k, v in fields.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"fields: every field needs one row per example, got {counts}")
    final = Path(root) / shard_dir_name(index)
    tmp = Path(root) / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, array in fields.items():
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
    (tmp / "count").write_text(str(next(iter(counts.values()))))
    tmp.rename(final)
    return final


def write_manifest(root: str | os.PathLike, meta: Mapping) -> dict:
    """List every complete shard in ``root/manifest.json`` (with ``meta``); returns the manifest."""
    root = Path(root)
    shards = sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit() and (p / "count").is_file())
    if not shards:
        raise ValueError(f"out: {root} holds no complete shard")
    fields = {}
    for f in sorted(shards[0].glob("*.npy")):
        shape, dtype = _header(f)[:2]
        fields[f.stem] = {"shape": list(shape[1:]), "dtype": dtype.str}
    manifest = {"format": FORMAT, "version": VERSION, **meta, "fields": fields,
                "shards": [{"name": p.name, "count": int((p / "count").read_text())} for p in shards]}
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(root / MANIFEST)
    return manifest


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError(f"{path}: expected a C-ordered array")
        return shape, dtype, f.tell()


class TokenShards:
    """A token-shard directory, read a batch of rows at a time."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"data.tokens: {self.path} holds no {MANIFEST}; write one with "
                                    "`muse-mini tokenize --source DATA --run RUN --out SHARDS`")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"data.tokens: {manifest_path} is not a {FORMAT} manifest")
        self.names = [s["name"] for s in self.manifest["shards"]]
        self.counts = [int(s["count"]) for s in self.manifest["shards"]]
        self.fields = dict(self.manifest["fields"])
        self._headers: dict[Path, tuple] = {}

    def __len__(self) -> int:
        return sum(self.counts)

    @property
    def text_mode(self) -> str:
        """``"shards"`` when embeddings are stored per shard, else ``"cache"`` (embedded at training)."""
        return "shards" if "text" in self.fields else "cache"

    def _file(self, shard: int, field: str) -> Path:
        return self.path / self.names[shard] / f"{field}.npy"

    def _rows(self, path: Path, rows: np.ndarray) -> np.ndarray:
        if path not in self._headers:
            if not path.is_file():
                raise FileNotFoundError(f"data.tokens: shard file {path} is missing (rerun `muse-mini tokenize`, "
                                        "which rewrites only missing shards)")
            self._headers[path] = _header(path)
        shape, dtype, offset = self._headers[path]
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        out = np.empty((len(rows), *shape[1:]), dtype)
        buf = out.reshape(len(rows), -1).view(np.uint8)
        fd = os.open(path, os.O_RDONLY)
        try:
            for i, r in enumerate(rows):
                if not 0 <= r < shape[0]:
                    raise IndexError(f"data.tokens: row {r} of {path} (it has {shape[0]})")
                buf[i] = np.frombuffer(os.pread(fd, row_bytes, offset + int(r) * row_bytes), np.uint8)
        finally:
            os.close(fd)
        return out

    def read(self, pairs: np.ndarray, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Rows ``pairs`` (``(shard, row)``) of ``fields`` (default: all), in order."""
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        fields = list(self.fields) if fields is None else list(fields)
        out = {f: [None] * len(pairs) for f in fields}
        for shard in np.unique(pairs[:, 0]):
            positions = np.flatnonzero(pairs[:, 0] == shard)  # where this shard's rows go in the batch
            for f in fields:
                rows = self._rows(self._file(int(shard), f), pairs[positions, 1])
                for j, i in enumerate(positions):
                    out[f][i] = rows[j]
        return {f: np.stack(v) for f, v in out.items()}

    def captions(self, shard: int) -> list[str]:
        """Every caption of one shard (for the small-caption-set text cache)."""
        return [str(c) for c in np.load(self._file(shard, "captions"), allow_pickle=False)]
