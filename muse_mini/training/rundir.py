"""The run directory a training run owns: lock, config check, resume point, DONE.

It holds ``config.json`` (``{"train_config", "metadata"}``), ``checkpoints/``, ``metrics.jsonl``,
``final.eqx`` (the last training state), ``model.eqx`` (the model alone, what sampling loads),
``DONE.json`` (written last) and ``.lock`` (names in :mod:`muse_mini.runs.layout`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from muse_mini.runs.checkpoint import (
    CheckpointError, atomic_write_bytes, checkpoint_path, latest_checkpoint, load_checkpoint,
)
from muse_mini.runs.layout import CKPT_DIR, CONFIG_FILE, DONE_FILE, FINAL_FILE, METRICS_FILE, stage_complete
from muse_mini.parallel.hosts import agree, is_main_process
from muse_mini.runs.sharded import SHARDED_DIR, ShardedCheckpoints, sharded_steps
from muse_mini.runs.weights import save_model

try:  # POSIX only; without it we simply do not guard against concurrent runs.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = [
    "RESUMABLE_FIELDS", "ConfigMismatchError", "RunSpec", "RunLock", "RunDirectory", "load_final", "load_latest",
    "write_json",
]

logger = logging.getLogger(__name__)

# Config fields that may change when a run is resumed: none of them changes the
# numbers computed. (``steps`` does change the cosine schedule's length, but
# "train this run for longer" is the one change a researcher legitimately needs.)
RESUMABLE_FIELDS = frozenset({"steps", "checkpoint_every", "log_every", "keep_checkpoints", "keep_every"})


_UNFINISHED, _FINISHED, _BEYOND = 0, 1, 2  # process 0's verdict on a run directory


class ConfigMismatchError(ValueError):
    """A run directory holds a run with a different configuration."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A run: its directory, its ``TrainConfig``, and the ``metadata`` its ``config.json`` records.

    On resume ``metadata`` must match except under the dotted prefixes ``ignore``; a field an
    older run lacks counts as its value in ``defaults``. ``model_of(state)`` goes to ``model.eqx``.
    """

    path: str | os.PathLike
    cfg: Any  # a TrainConfig; its seed defines every key
    metadata: dict
    ignore: Sequence[str] = ()
    defaults: dict | None = None
    model_of: Callable[[Any], Any] | None = None

    def check_config(self) -> None:
        """Raise `ConfigMismatchError` now if ``path`` holds another run (before any data is read)."""
        RunDirectory(self).check_config()

    def finished(self) -> bool:
        """Whether ``path`` holds this run finished at exactly ``cfg.steps`` (no data needed)."""
        done = Path(self.path) / DONE_FILE
        return stage_complete(self.path) and json.loads(done.read_text())["step"] == self.cfg.steps


def _json_default(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON-serialisable")


def normalise(x: Any) -> Any:
    """``x`` after a JSON round trip; NaN/inf refused at start-up, not at the first checkpoint."""
    try:
        return json.loads(json.dumps(x, default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"train(): cfg/metadata must be JSON-serialisable: {e}") from e


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def config_differences(old: dict, new: dict, ignore: Sequence[str] = (), defaults: dict | None = None) -> list[str]:
    """Fields that differ; a field the old run did not store counts as ``defaults[field]``
    (configuration fields added later default to the behaviour runs had before them)."""
    a, b = {**_flatten(defaults or {}), **_flatten(old)}, _flatten(new)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if k.rsplit(".", 1)[-1] in RESUMABLE_FIELDS or any(k == p or k.startswith(p + ".") for p in ignore):
            continue
        if a.get(k, "<missing>") != b.get(k, "<missing>"):
            diffs.append(f"{k}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}")
    return diffs


class RunLock:
    """An exclusive flock on ``run_dir/.lock``; the kernel drops it if we die."""

    def __init__(self, run_dir: Path, *, enabled: bool = True):
        self.path = Path(run_dir) / ".lock"
        self.fd = None
        self.enabled = enabled  # in a multi-process job only process 0 locks

    def __enter__(self):
        if fcntl is None or not self.enabled:  # pragma: no cover
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise RuntimeError(
                f"{self.path.parent} is already being trained by another process "
                "(or another train() call in this one)"
            ) from None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock


def load_final(run_dir: str | os.PathLike, like: Any) -> Any:
    """The final state of a finished run; ``like`` is a skeleton (see `load_checkpoint`)."""
    run_dir = Path(run_dir)
    if not stage_complete(run_dir):
        raise FileNotFoundError(
            f"{run_dir} holds no finished run ({DONE_FILE} or {FINAL_FILE} missing); "
            f"latest checkpoint: {latest_checkpoint(run_dir / CKPT_DIR)}"
        )
    if (run_dir / FINAL_FILE).is_file():
        return load_checkpoint(run_dir / FINAL_FILE, like)[0]
    from muse_mini.training.placement import Placement  # a run on a mesh: its last Orbax step

    return RunDirectory(RunSpec(run_dir, None, {})).load_final(Placement(like), None)


def load_latest(run_dir: str | os.PathLike, like: Any) -> tuple[Any, int]:
    """``(state, step)`` of the newest checkpoint (``.eqx`` or Orbax), e.g. to inspect a run in progress."""
    from muse_mini.training.placement import Placement  # onto one device

    resumed = RunDirectory(RunSpec(run_dir, None, {})).resume_point(Placement(like), None, steps=2 ** 62)
    if resumed is None:
        raise FileNotFoundError(f"no checkpoints in {Path(run_dir) / CKPT_DIR}")
    return resumed[0], resumed[1]


def _file_step(path: Path | None) -> int:
    return -1 if path is None else int(path.stem.split("_")[-1])


def _publish_final(ckpt: Path, final: Path) -> None:
    # A hard link costs no space or time; fall back to a copy where links fail.
    tmp = final.with_name(f".{final.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(ckpt, tmp)
        os.replace(tmp, final)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write_bytes(final, ckpt.read_bytes())


class RunDirectory:
    """One run's directory: checks its config, finds where to resume, publishes the result.

    Use it inside ``with RunLock(rd.path)``: every method assumes nobody else writes.
    """

    def __init__(self, spec: RunSpec, *, say: Callable[[str], None] = logger.info):
        self.spec, self.path, self.say = spec, Path(spec.path), say
        self.config = normalise({"train_config": spec.cfg, "metadata": spec.metadata})
        self.ignore = [f"metadata.{p}" for p in spec.ignore]
        self.defaults = normalise({"metadata": spec.defaults or {}})
        self.ckpt_dir = self.path / CKPT_DIR
        self.metrics_path = self.path / METRICS_FILE

    def create(self) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)

    def check_config(self) -> None:
        """Raise `ConfigMismatchError` if a stored ``config.json`` describes another run."""
        path = self.path / CONFIG_FILE
        if not path.exists():
            return
        diffs = config_differences(json.loads(path.read_text()), self.config, self.ignore, self.defaults)
        if diffs:
            raise ConfigMismatchError(
                f"{path} was written by a run with a different configuration; refusing to "
                f"resume it. Differing fields: {'; '.join(diffs)}. Use a new run directory "
                f"(or delete {self.path} to start over). Only {sorted(RESUMABLE_FIELDS)} may "
                "change on resume."
            )

    def write_config(self) -> None:
        path = self.path / CONFIG_FILE
        if not path.exists() or json.loads(path.read_text()) != self.config:
            write_json(path, self.config)

    def finished(self, steps: int) -> bool:
        """True if the run already finished ``steps`` updates; otherwise clear ``DONE.json`` and killed
        writers' temporaries. Process 0 decides and tells the others."""
        verdict = self._finished_verdict(steps) if is_main_process() else 0
        verdict = agree(verdict)
        if verdict == _BEYOND:
            raise ValueError(getattr(self, "_beyond", f"{self.path} finished more than cfg.steps={steps} steps"))
        return verdict == _FINISHED

    def _finished_verdict(self, steps: int) -> int:
        done_path = self.path / DONE_FILE
        if stage_complete(self.path):
            done = json.loads(done_path.read_text())
            if done["step"] == steps:
                self.say(f"{self.path}: finished run ({steps} steps); loading its final state")
                self.write_config()  # only `ignore` fields can differ
                return _FINISHED
            if done["step"] > steps:
                self._beyond = f"{self.path} already finished {done['step']} steps > cfg.steps={steps}"
                return _BEYOND
            self.say(f"{self.path}: extending finished run {done['step']} -> {steps} steps")
        done_path.unlink(missing_ok=True)
        for p in self.ckpt_dir.glob(".*.tmp"):  # we hold the lock, so nobody else writes
            p.unlink(missing_ok=True)
        return _UNFINISHED

    def resume_point(self, placement, store, steps: int) -> tuple[Any, int, float, Path | None] | None:
        """``(state, step, wall_time_s, path)`` of the newest ``.eqx`` or Orbax checkpoint (a run moves
        between meshes), or None. An unreadable newest one is an error naming it, never skipped."""
        latest = latest_checkpoint(self.ckpt_dir)
        file_step = _file_step(latest)
        orbax = sharded_steps(self.ckpt_dir / SHARDED_DIR)
        if orbax and (latest is None or orbax[-1] > file_step):
            return self._resume_sharded(placement, store, orbax[-1], steps)
        if latest is None:
            return None
        try:
            state, meta = load_checkpoint(latest, placement.like)
        except CheckpointError as e:
            raise CheckpointError(
                f"{e}. Cannot resume from the newest checkpoint. If the file is damaged, "
                f"delete {latest} to resume from the previous checkpoint."
            ) from None
        start = int(meta["step"])
        if checkpoint_path(self.ckpt_dir, start).name != latest.name:
            raise CheckpointError(f"{latest} holds step {start}, not the step in its name")
        return self._resumed(placement.put(state), start, meta, latest, steps)

    def _resume_sharded(self, placement, store, step: int, steps: int):
        path = self.ckpt_dir / SHARDED_DIR / f"{step:08d}"
        reader = store or ShardedCheckpoints(self.ckpt_dir / SHARDED_DIR, keep=0)
        try:
            state, meta = reader.restore(step, placement.target())
        except Exception as e:  # noqa: BLE001 - Orbax raises many kinds; name the directory
            raise CheckpointError(f"cannot restore {path}: {e}. If it is damaged, delete it to resume "
                                  "from the previous checkpoint.") from e
        finally:
            if store is None:
                reader.close()
        return self._resumed(state, step, meta, path, steps)

    def _resumed(self, state, start: int, meta: dict, path: Path, steps: int):
        if start > steps:
            raise ValueError(
                f"{path} is at step {start}, beyond cfg.steps={steps}; "
                "use a larger cfg.steps or a new run directory"
            )
        self.say(f"{self.path}: resuming from {path.name} (step {start})")
        return state, start, float(meta.get("wall_time_s", 0.0)), path

    def load_final(self, placement, store) -> Any:
        """The stored final state of a finished run (exactly its last step), placed on ``placement``'s mesh."""
        if (self.path / FINAL_FILE).is_file():
            state = load_checkpoint(self.path / FINAL_FILE, placement.like)[0]
            return placement.put(state)
        step = int(json.loads((self.path / DONE_FILE).read_text())["step"])
        if step in sharded_steps(self.ckpt_dir / SHARDED_DIR):
            return self._resume_sharded(placement, store, step, step)[0]
        if checkpoint_path(self.ckpt_dir, step).is_file():
            state = load_checkpoint(checkpoint_path(self.ckpt_dir, step), placement.like)[0]
            return placement.put(state)
        raise FileNotFoundError(
            f"{self.path} finished {step} steps, but its final training state is gone ({FINAL_FILE} and "
            f"the step-{step} checkpoint): its model.eqx still samples; to train further, start a new run"
        )

    def publish(self, last_ckpt: Path, model: Any | None, *, steps: int, wall_time_s: float) -> None:
        """``final.eqx`` (none after an Orbax step: that step is the final state), ``model.eqx``, then
        ``DONE.json`` last."""
        if last_ckpt is not None and last_ckpt.suffix == ".eqx":
            _publish_final(last_ckpt, self.path / FINAL_FILE)
        else:
            (self.path / FINAL_FILE).unlink(missing_ok=True)
        if model is not None:  # the weights alone, for sampling (runs.weights)
            save_model(self.path, model, metadata=self.config)
        finished = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        write_json(self.path / DONE_FILE, {"step": steps, "wall_time_s": wall_time_s, "finished_at": finished})
