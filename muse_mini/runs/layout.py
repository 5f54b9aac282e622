"""What a run directory holds, and how to read it without any training code.

Every stage (tokenizer, base, super-res, decoder) writes one directory::

    run_dir/config.json        {"train_config": ..., "metadata": ...} (what was trained)
    run_dir/model.eqx          the trained model alone: what sampling loads
    run_dir/final.eqx          the final training state (model + optimiser), to extend the run
    run_dir/checkpoints/       the newest training-state checkpoints
    run_dir/metrics.jsonl      {"step", "time", <metrics>} every few updates
    run_dir/DONE.json          written last: {"step", "wall_time_s", "finished_at"}
    run_dir/.lock              flock'ed while a process trains here
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from muse_mini.config.overrides import read_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "model.eqx"
FINAL_FILE = "final.eqx"
DONE_FILE = "DONE.json"
CKPT_DIR = "checkpoints"
SHARDED_DIR = "sharded"  # CKPT_DIR/SHARDED_DIR/<step>/: Orbax checkpoints of a run on a mesh


def stage_complete(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a finished run: ``DONE.json`` and its result (``final.eqx``,
    ``model.eqx``, or for a run on a mesh the Orbax checkpoint of its last step)."""
    run_dir = Path(run_dir)
    done = run_dir / DONE_FILE
    if not done.is_file():
        return False
    if (run_dir / FINAL_FILE).is_file() or (run_dir / MODEL_FILE).is_file():
        return True
    try:
        step = int(json.loads(done.read_text())["step"])
    except (ValueError, KeyError, TypeError):
        return False
    return (run_dir / CKPT_DIR / SHARDED_DIR / f"{step:08d}").is_dir()


def relative_run_path(path: str | os.PathLike, run_dir: str | os.PathLike) -> str:
    """``path`` relative to ``run_dir``, lexically (links not followed), as a stage records its input runs."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(run_dir))


def read_run_config(run_dir: str | os.PathLike) -> dict:
    """The stored ``config.json`` of a run: ``{"train_config": ..., "metadata": ...}``."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {CONFIG_FILE}; is this a muse_mini run directory?")
    stored = read_json(path, "run config")
    if not isinstance(stored.get("metadata"), dict):
        raise ValueError(f"{path}: has no 'metadata' section; it was not written by muse_mini")
    return stored


def read_metrics(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """``metrics.jsonl`` as column arrays aligned with ``"step"`` (NaN where a
    metric is absent from a line). Incomplete lines are skipped."""
    rows = []
    path = Path(run_dir) / METRICS_FILE
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    keys = list(dict.fromkeys(k for r in rows for k in r))
    out = {k: np.array([r.get(k, np.nan) for r in rows], dtype=float) for k in keys}
    if "step" in out:
        out["step"] = out["step"].astype(np.int64)
    return out
