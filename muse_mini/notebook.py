"""Settings shared by the notebooks: smoke mode, which pipeline to show, where scratch output goes.

``MUSE_MINI_SMOKE=1`` shrinks every heavy cell to a few steps (the notebook tests set it);
``MUSE_MINI_RUNS`` moves run directories (default ``runs/`` at the repository root);
``MUSE_MINI_SCRATCH`` moves what notebooks write (default ``~/.cache/muse_mini/notebooks``), so a class
can share one read-only checkout, run or set of shipped weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from muse_mini.config import SMOKE_OVERRIDES  # noqa: F401  (notebooks import it from here)
from muse_mini.runs.layout import stage_complete

SMOKE = os.environ.get("MUSE_MINI_SMOKE", "") == "1"
RUNS = Path(os.environ.get("MUSE_MINI_RUNS", Path(__file__).resolve().parents[1] / "runs"))
SCRATCH = Path(os.environ.get("MUSE_MINI_SCRATCH", Path.home() / ".cache" / "muse_mini" / "notebooks")).expanduser()
SHIPPED = "shapes"  # the pretrained pipeline inside the package
#: where notebook 09 looks for aMUSEd-256's released weights (``MUSE_MINI_AMUSED``)
AMUSED = Path(os.environ.get("MUSE_MINI_AMUSED", Path.home() / ".cache" / "muse_mini" / "amused-256")).expanduser()


def _persistent_compilation_cache() -> None:
    """Compiled programs kept on disk: a notebook's second run skips most of its JIT time."""
    try:
        jax.config.update("jax_compilation_cache_dir", str(SCRATCH / "jax-cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except (AttributeError, ValueError):  # a JAX without the persistent cache: compile every time
        pass


_persistent_compilation_cache()


def steps(full: int, smoke: int = 2) -> int:
    """``full`` normally, ``smoke`` in smoke mode (for loops and sweeps in cells)."""
    return smoke if SMOKE else full


def scratch_dir(name: str) -> Path:
    """A writable directory ``SCRATCH/name`` for what a notebook trains or caches (never the run it reads)."""
    path = SCRATCH / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def pipeline_source() -> str | Path:
    """``RUNS/demo`` once ``make demo`` finished it (not in smoke mode), else the shipped ``"shapes"``."""
    demo = RUNS / "demo"
    if not SMOKE and all(stage_complete(demo / s) for s in ("tokenizer-base", "base", "superres")):
        return demo
    return SHIPPED


def load_pipeline():
    """The pipeline the notebooks show: your trained ``runs/demo``, else the shipped pretrained one; says which."""
    from muse_mini.pipeline import Pipeline

    source = pipeline_source()
    if source == SHIPPED:
        print(f"using the pretrained Shapes pipeline shipped with muse_mini ({SHIPPED!r}); "
              "train your own with `make demo` and this notebook uses runs/demo instead")
    else:
        print(f"using your trained pipeline {source}")
    return Pipeline.load(source)


def amused_folder() -> Path:
    """aMUSEd-256's released weights at ``AMUSED`` once downloaded (not in smoke mode), else the tiny random
    aMUSEd of the tests (same layout, same code path, noise for images); says which, and how to download."""
    if not SMOKE and (AMUSED / "model_index.json").is_file():
        print(f"using aMUSEd-256's released weights in {AMUSED}")
        return AMUSED
    download = f"huggingface-cli download amused/amused-256 --local-dir {AMUSED}"
    fixture = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "amused" / "tiny-256"
    if not (fixture / "model_index.json").is_file():
        raise FileNotFoundError(f"no aMUSEd folder: neither {AMUSED} nor the test fixture {fixture}; "
                                f"download the weights with `{download}`")
    print(f"using the tiny RANDOM aMUSEd of the tests ({fixture}): its images are noise. For the real weights "
          f"(a few GB; their openrail++ licence applies): `{download}`, or set MUSE_MINI_AMUSED to a copy")
    return fixture
