"""Settings shared by the notebooks: smoke mode, where runs live, a trained pipeline.

``MUSE_MINI_SMOKE=1`` (set by ``make test``) shrinks every heavy cell to a few
steps so a notebook runs top to bottom in about a minute; ``MUSE_MINI_RUNS``
moves run directories (default ``runs/`` at the repository root).
"""

from __future__ import annotations

import os
from pathlib import Path

from muse_mini.runs.layout import stage_complete

SMOKE = os.environ.get("MUSE_MINI_SMOKE", "") == "1"
RUNS = Path(os.environ.get("MUSE_MINI_RUNS", Path(__file__).resolve().parents[1] / "runs"))

# Tiny versions of every stage (the full recipe's too): enough to exercise the code, not to learn much.
SMOKE_OVERRIDES = (
    "data.num_examples=256",
    "tokenizer_train.steps=20", "tokenizer_train.warmup_steps=5", "tokenizer_train.checkpoint_every=10",
    "highres_tokenizer_train.steps=20", "highres_tokenizer_train.warmup_steps=5",
    "highres_tokenizer_train.checkpoint_every=10", "highres_tokenizer_train.batch_size=4",
    "base_train.steps=20", "base_train.warmup_steps=5", "base_train.checkpoint_every=10",
    "superres_train.steps=10", "superres_train.warmup_steps=2", "superres_train.checkpoint_every=10",
    "decoder.enabled=true", "decoder_train.steps=10", "decoder_train.warmup_steps=2",
    "decoder_train.checkpoint_every=10", "decoder_train.batch_size=4", "superres.lowres_margin=2",
    "tokenizer_train.batch_size=4",
    "base_train.batch_size=16", "superres_train.batch_size=8",
    "base.depth=1", "base.width=64", "base.mlp_dim=128", "base.num_heads=2",
    "superres.depth=1", "superres.lowres_depth=1", "superres.width=64", "superres.mlp_dim=128",
    "superres.num_heads=2", "sampler.steps=6", "superres_sampler.steps=4",
)


def steps(full: int, smoke: int = 2) -> int:
    """``full`` normally, ``smoke`` in smoke mode (for loops and sweeps in cells)."""
    return smoke if SMOKE else full


def pipeline_dir() -> Path:
    """A directory with every toy stage trained.

    ``runs/demo`` when ``make demo`` has finished it; otherwise (and always in
    smoke mode) a smoke-sized pipeline is trained once under ``RUNS/smoke``.
    """
    demo = RUNS / "demo"
    if not SMOKE and all(stage_complete(demo / s) for s in ("tokenizer-base", "base", "superres")):
        return demo
    from muse_mini.demo import run_demo

    out = RUNS / ("smoke" if SMOKE else "demo")
    run_demo("quick", out, progress=not SMOKE, evaluate=False, overrides=SMOKE_OVERRIDES if SMOKE else ())
    return out
