"""Settings shared by the notebooks: smoke mode, where runs live, a trained pipeline.

``MUSE_MINI_SMOKE=1`` shrinks every heavy cell to a few steps (the notebook tests set it);
``MUSE_MINI_RUNS`` moves run directories (default ``runs/`` at the repository root).
"""

from __future__ import annotations

import os
from pathlib import Path

from muse_mini.config import SMOKE_OVERRIDES  # noqa: F401  (notebooks import it from here)
from muse_mini.runs.layout import stage_complete

SMOKE = os.environ.get("MUSE_MINI_SMOKE", "") == "1"
RUNS = Path(os.environ.get("MUSE_MINI_RUNS", Path(__file__).resolve().parents[1] / "runs"))

def steps(full: int, smoke: int = 2) -> int:
    """``full`` normally, ``smoke`` in smoke mode (for loops and sweeps in cells)."""
    return smoke if SMOKE else full


def pipeline_dir() -> Path:
    """``RUNS/demo`` once ``make demo`` finished it, else a FileNotFoundError giving the command.

    In smoke mode, a smoke-sized pipeline trained once under ``RUNS/smoke``.
    """
    demo = RUNS / "demo"
    if not SMOKE:
        missing = [s for s in ("tokenizer-base", "base", "superres") if not stage_complete(demo / s)]
        if missing:
            raise FileNotFoundError(f"{demo}: no finished {', '.join(missing)} run(s); this notebook needs the "
                                    f"trained demo pipeline: run `make demo` (or `muse-mini demo --out {demo}`) first")
        return demo
    from muse_mini.demo import run_demo

    out = RUNS / "smoke"
    run_demo("smoke", out, progress=False, evaluate=False)
    return out
