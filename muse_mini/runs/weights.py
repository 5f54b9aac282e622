"""Model weights apart from training state (nanoGPT's ``{'model', 'optimizer'}`` split).

A finished stage writes ``model.eqx``, its model alone in the format of
:mod:`muse_mini.runs.checkpoint`; sampling reads only that file, so it builds
no optimiser and no discriminator.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from muse_mini.runs.checkpoint import load_checkpoint, save_checkpoint
from muse_mini.runs.layout import DONE_FILE, MODEL_FILE, stage_complete


def save_model(run_dir: str | os.PathLike, model: Any, *, metadata: dict) -> Path:
    """Write ``run_dir/model.eqx`` atomically."""
    return save_checkpoint(Path(run_dir) / MODEL_FILE, model, metadata=metadata)


def load_model(run_dir: str | os.PathLike, like: Any) -> Any:
    """The trained model of a finished run; ``like`` is its skeleton (``eqx.filter_eval_shape``)."""
    run_dir = Path(run_dir)
    if not stage_complete(run_dir):
        raise FileNotFoundError(f"{run_dir} holds no finished run (no {DONE_FILE}); train it first")
    if not (run_dir / MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"{run_dir}: no {MODEL_FILE} (a run from before muse_mini 0.1): retrain it, or delete its {DONE_FILE} "
            f"and rerun its training command, which resumes at its last step and writes {MODEL_FILE}")
    return load_checkpoint(run_dir / MODEL_FILE, like)[0]
