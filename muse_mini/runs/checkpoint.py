"""Single-file, atomic, self-verifying checkpoints for Equinox pytrees.

A file is one line of JSON header, then ``eqx.tree_serialise_leaves(pytree)``'s bytes.
The header (``head -1 FILE``) holds the format and version, the step, the caller's
metadata, the payload's length and sha256 (so truncated and corrupt files are told
apart and refused) and a manifest of every leaf's path, shape and dtype (checked
against the skeleton before deserialising, so a mismatch names the leaf). Writes go
through an fsync-ed temporary file and ``os.replace``: a crash leaves the old file or
the new one. Typed PRNG keys are stored as their ``key_data`` and re-wrapped on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "read_header",
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "prune_checkpoints",
    "atomic_write_bytes",
]

FORMAT = "muse_mini.checkpoint"
VERSION = 1
_MAX_HEADER_BYTES = 64 * 1024 * 1024  # a header larger than this is not ours
_CKPT_RE = re.compile(r"^ckpt_(\d{8,})\.eqx$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, or does not match the model."""

    missing: tuple[str, ...] = ()  # the model's leaf paths the file lacks, when it does not match


# --------------------------------------------------------------------------- atomic IO


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable (POSIX); not supported everywhere, hence best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, chunks: bytes | list[bytes]) -> None:
    """Write ``chunks`` to ``path`` so that readers see either the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(chunks, (bytes, bytearray, memoryview)):
        chunks = [chunks]
    # Same directory => same filesystem => os.replace is an atomic rename.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide files from collaborators
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Includes KeyboardInterrupt: never leave a half-written temporary behind.
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


# --------------------------------------------------------------------------- leaves


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _serialisable(x: Any) -> bool:
    """Mirrors what ``eqx.default_serialise_filter_spec`` writes (arrays and scalars)."""
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct)) or eqx.is_array_like(x)


def _describe(x: Any) -> dict:
    if isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct, np.generic)):
        return {"shape": list(x.shape), "dtype": str(x.dtype)}
    return {"shape": [], "dtype": f"python:{type(x).__name__}"}


def _manifest(tree: Any) -> list[dict]:
    paths_and_leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = []
    for path, leaf in paths_and_leaves:
        if _serialisable(leaf):
            out.append({"path": jax.tree_util.keystr(path), **_describe(leaf)})
    return out


def _keys_to_data(tree: Any) -> tuple[Any, dict[str, str]]:
    """Replace typed PRNG keys by their uint32 data; remember each key's impl."""
    impls: dict[str, str] = {}

    def convert(path, x):
        if not _is_key(x):
            return x
        name = jax.tree_util.keystr(path)
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.eval_shape(jax.random.key_data, x)
        impls[name] = str(jax.random.key_impl(x))
        return jax.random.key_data(x)

    return jax.tree_util.tree_map_with_path(convert, tree), impls


# --------------------------------------------------------------------------- save


def save_checkpoint(
    path: str | os.PathLike, pytree: Any, *, metadata: dict, step: int | None = None
) -> Path:
    """Atomically write ``pytree`` to ``path``; ``metadata`` (JSON) goes verbatim into the header."""
    path = Path(path)
    if step is None:
        step = metadata.get("step")
    tree, key_impls = _keys_to_data(pytree)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    payload = buf.getvalue()
    header = {
        "format": FORMAT,
        "version": VERSION,
        "step": None if step is None else int(step),
        "metadata": metadata,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "leaves": _manifest(pytree),
        "key_impls": key_impls,
        "created": time.time(),
        "jax": jax.__version__,
        "equinox": eqx.__version__,
    }
    try:
        # No indent => json escapes every newline, so the header is exactly one line.
        line = json.dumps(header, allow_nan=False).encode() + b"\n"
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint metadata for {path} is not JSON-serialisable: {e}") from e
    atomic_write_bytes(path, [line, payload])
    return path


# --------------------------------------------------------------------------- load


def _read_verified(path: Path) -> tuple[dict, bytes]:
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CheckpointError(f"cannot open checkpoint {path}: {e}") from e
    with f:
        line = f.readline(_MAX_HEADER_BYTES)
        payload = f.read()
    if not line.endswith(b"\n"):
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a {FORMAT} file (no complete header line)"
        )
    try:
        header = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file (wrong format / bad header)")
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {header.get('version')!r}; "
            f"this code reads version {VERSION}"
        )
    expected = header["payload_bytes"]
    if len(payload) < expected:
        raise CheckpointError(
            f"checkpoint {path} is truncated: payload has {len(payload)} of {expected} bytes "
            "(interrupted write or full disk?)"
        )
    if len(payload) > expected:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: {len(payload) - expected} unexpected trailing bytes"
        )
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: sha256 hash mismatch of the payload")
    return header, payload


def read_header(path: str | os.PathLike) -> dict:
    """Return the verified header of a checkpoint (checks length and hash, loads no arrays)."""
    return _read_verified(Path(path))[0]


def _check_manifest(path: Path, stored: list[dict], wanted: list[dict]) -> None:
    stored_by_path = {e["path"]: e for e in stored}
    wanted_by_path = {e["path"]: e for e in wanted}
    missing = [p for p in wanted_by_path if p not in stored_by_path]
    extra = [p for p in stored_by_path if p not in wanted_by_path]
    if missing or extra:
        err = CheckpointError(
            f"checkpoint {path} does not match the model structure: "
            f"leaves missing from file {missing[:5]}, leaves in file but not in model "
            f"{extra[:5]}" + (" ..." if len(missing) > 5 or len(extra) > 5 else "")
        )
        err.missing = tuple(missing)
        raise err
    for p, want in wanted_by_path.items():
        got = stored_by_path[p]
        if got["shape"] != want["shape"] or got["dtype"] != want["dtype"]:
            raise CheckpointError(
                f"checkpoint {path}: leaf {p} has shape {tuple(got['shape'])} {got['dtype']} "
                f"in the file but the model expects {tuple(want['shape'])} {want['dtype']}"
            )
    if [e["path"] for e in stored] != [e["path"] for e in wanted]:
        raise CheckpointError(f"checkpoint {path}: leaves are stored in a different order")


def _leading(path: Path, stored: list[dict], prefix: str) -> list[dict]:
    """The manifest entries under ``prefix`` with it stripped; they must come first in the file."""
    inside = [e for e in stored if e["path"].startswith(prefix)]
    if stored[: len(inside)] != inside:
        raise CheckpointError(f"checkpoint {path}: the leaves under {prefix} are not stored first")
    return [{**e, "path": e["path"][len(prefix):]} for e in inside]


def load_checkpoint(path: str | os.PathLike, like: Any, *, prefix: str | None = None) -> tuple[Any, dict]:
    """``(pytree, metadata)`` from a `save_checkpoint` file; ``like`` is a skeleton (``eqx.filter_eval_shape``).

    With ``prefix`` (e.g. ``".model"``) only that leading subtree is read, so a training
    state's model loads without building its optimiser state. Problems raise `CheckpointError`.
    """
    path = Path(path)
    header, payload = _read_verified(path)
    stored = header["leaves"] if prefix is None else _leading(path, header["leaves"], prefix)
    _check_manifest(path, stored, _manifest(like))
    like_data, _ = _keys_to_data(like)
    try:
        tree = eqx.tree_deserialise_leaves(io.BytesIO(payload), like_data)
    except Exception as e:  # the manifest matched, so this should not happen
        raise CheckpointError(f"checkpoint {path} could not be deserialised: {e}") from e
    impls = header.get("key_impls", {})
    if impls:

        def rewrap(p, x):
            name = jax.tree_util.keystr(p)
            if name not in impls:
                return x
            return jax.random.wrap_key_data(jnp.asarray(x), impl=impls[name])

        tree = jax.tree_util.tree_map_with_path(rewrap, tree)
    metadata = dict(header.get("metadata") or {})
    metadata["step"] = header.get("step")
    return tree, metadata


# --------------------------------------------------------------------------- directory


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    return Path(directory) / f"ckpt_{step:08d}.eqx"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` sorted by step; temporary files are never listed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """Path of the highest-step ``ckpt_*.eqx`` in ``directory`` (not verified), or None."""
    ckpts = list_checkpoints(directory)
    return ckpts[-1][1] if ckpts else None


def prune_checkpoints(directory: str | os.PathLike, keep: int | None, *, keep_every: int = 0) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (``keep`` None/0: keep all) and,
    with ``keep_every``, those whose step is a multiple of it (kept for the offline EMA)."""
    if not keep:
        return []
    removed = []
    for step, p in list_checkpoints(directory)[:-keep]:
        if keep_every and step % keep_every == 0:
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        _fsync_dir(Path(directory))
    return removed
