"""Model weights apart from training state (nanoGPT's ``{'model', 'optimizer'}`` split).

A finished stage writes ``model.eqx``: its model alone, in the self-verifying
format of :mod:`muse_mini.runs.checkpoint`, with the stage's metadata in the
header. Sampling reads only that file, so it builds no optimiser and no
discriminator. Runs trained before ``model.eqx`` existed still load: their
``final.eqx`` training state stores the model's leaves first, and those are
read alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from muse_mini.runs.checkpoint import load_checkpoint, save_checkpoint
from muse_mini.runs.layout import DONE_FILE, FINAL_FILE, MODEL_FILE, stage_complete


def save_model(run_dir: str | os.PathLike, model: Any, *, metadata: dict) -> Path:
    """Write ``run_dir/model.eqx`` atomically."""
    return save_checkpoint(Path(run_dir) / MODEL_FILE, model, metadata=metadata)


def load_model(run_dir: str | os.PathLike, like: Any, *, legacy_field: str) -> Any:
    """The trained model of a finished run; ``like`` is its skeleton (``eqx.filter_eval_shape``).

    ``legacy_field`` names the training state's model field (``"model"``,
    ``"vqgan"``) for runs that hold only ``final.eqx``.
    """
    run_dir = Path(run_dir)
    if not stage_complete(run_dir):
        raise FileNotFoundError(
            f"{run_dir} holds no finished run ({DONE_FILE} or {FINAL_FILE} missing); train it first"
        )
    if (run_dir / MODEL_FILE).is_file():
        return load_checkpoint(run_dir / MODEL_FILE, like)[0]
    return load_checkpoint(run_dir / FINAL_FILE, like, prefix=f".{legacy_field}")[0]
