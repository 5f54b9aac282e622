"""Webdataset tar shards in img2dataset's layout (CC3M, Table 1): list, index, read and write them.

Each shard ``00000.tar`` holds ``KEY.jpg``, ``KEY.txt``, ``KEY.json`` per sample, beside
``00000.parquet`` and ``00000_stats.json``. One pass over a shard's headers
(:mod:`tarfile`) gives each member's offset, so a sample is read with one seek.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "IMAGE_EXTENSIONS", "CAPTION_EXTENSIONS", "Shard", "expand_shards", "looks_like_webdataset",
    "write_webdataset",
]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSIONS = ("txt", "caption")
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shards(source: str | Path) -> list[Path]:
    """The shard paths of a directory of ``*.tar``, one ``.tar``, or ``DIR/{00000..00099}.tar`` (listed
    whether or not they exist, so a missing one can be named)."""
    text = str(source)
    match = _BRACES.search(text)
    if match:
        first, last = match.group(1), match.group(2)
        width = len(first)
        return [Path(text[: match.start()] + f"{i:0{width}d}" + text[match.end():])
                for i in range(int(first), int(last) + 1)]
    path = Path(source)
    if path.is_file() and path.suffix == ".tar":
        return [path]
    if path.is_dir():
        return sorted(path.glob("*.tar"))
    return []


def looks_like_webdataset(source: str | Path) -> bool:
    """Whether ``source`` names webdataset shards (a brace pattern, a ``.tar``, or a folder of them)."""
    text = str(source)
    if _BRACES.search(text) and text.endswith(".tar"):
        return True
    path = Path(text)
    return (path.is_file() and path.suffix == ".tar") or (path.is_dir() and any(path.glob("*.tar")))


@dataclasses.dataclass(frozen=True)
class Member:
    """Where one file of a sample lies in its tar: ``size`` bytes from ``offset``."""

    offset: int
    size: int


class Shard:
    """One tar shard, indexed on the first read; ``len`` reads ``NNNNN_stats.json`` when present."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return self.path.is_file()

    @functools.cached_property
    def _stats_count(self) -> int | None:
        stats = self.path.with_name(self.path.stem + "_stats.json")
        try:
            count = json.loads(stats.read_text()).get("successes")
        except (OSError, ValueError):
            return None
        return count if isinstance(count, int) and count >= 0 else None

    def __len__(self) -> int:
        return self._stats_count if self._stats_count is not None else len(self.keys)

    @functools.cached_property
    def index(self) -> dict[str, dict[str, Member]]:
        """``key -> {extension -> Member}`` in the tar's order (one pass over the headers)."""
        samples: dict[str, dict[str, Member]] = {}
        try:
            with tarfile.open(self.path, mode="r:") as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    key, dot, ext = info.name.rsplit("/", 1)[-1].partition(".")
                    if dot and not key.startswith("_"):
                        samples.setdefault(key, {})[ext.lower()] = Member(info.offset_data, info.size)
        except tarfile.TarError as e:
            raise ValueError(f"data.source: shard {self.path} is not a readable tar file ({e})") from None
        return samples

    @functools.cached_property
    def keys(self) -> list[str]:
        """Keys of the samples that have an image (a caption may still be missing)."""
        return [k for k, members in self.index.items() if any(e in members for e in IMAGE_EXTENSIONS)]

    def read(self, row: int) -> tuple[str, dict[str, bytes]]:
        """Sample ``row``'s key and raw members (``{"jpg": b"...", "txt": b"...", ...}``)."""
        key = self.keys[row]
        members = self.index[key]
        out = {}
        with open(self.path, "rb") as f:
            for ext, m in members.items():
                f.seek(m.offset)
                out[ext] = f.read(m.size)
        return key, out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(samples: Iterable[tuple[bytes, str, dict]], out_dir: str | Path, *,
                     shard_size: int = 10_000, image_ext: str = "jpg") -> list[Path]:
    """Write ``(image_bytes, caption, meta)`` samples exactly as img2dataset does (keys
    ``{shard:05d}{row:04d}``, stats and parquet files); returns the shard paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(max(shard_size - 1, 1))))
    paths: list[Path] = []
    tar = None
    rows: list[dict] = []

    def close() -> None:
        if tar is None:
            return
        tar.close()
        stem = paths[-1].stem
        (out / f"{stem}_stats.json").write_text(json.dumps(
            {"count": len(rows), "successes": len(rows), "failed_to_download": 0, "failed_to_resize": 0}))
        pq.write_table(pa.Table.from_pylist(rows), out / f"{stem}.parquet")

    for i, (image, caption, meta) in enumerate(samples):
        shard, row = divmod(i, shard_size)
        if row == 0:
            close()
            paths.append(out / f"{shard:05d}.tar")
            tar, rows = tarfile.open(paths[-1], mode="w"), []
        key = f"{shard:05d}{row:0{width}d}"
        record = {"key": key, "status": "success", "caption": caption, **meta}
        _add(tar, f"{key}.{image_ext}", image)
        _add(tar, f"{key}.txt", caption.encode())
        _add(tar, f"{key}.json", json.dumps(record).encode())
        rows.append({"key": key, "caption": caption, "status": "success"})
    close()
    return paths
