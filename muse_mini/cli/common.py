"""Pieces the `muse-mini` commands share: config overrides, the preset, seed and progress flags, the output check."""

from __future__ import annotations

import argparse
from pathlib import Path

from muse_mini.config import PRESETS
from muse_mini.config.checks import SEED_RANGE_TEXT

RUN_HELP = ("pipeline: a run directory (runs/demo), the shipped pretrained name 'shapes', "
            "a folder `muse-mini export` wrote, an aMUSEd folder (amused/amused-256's layout), or a Hub repo id")


def add_overrides_argument(parser: argparse.ArgumentParser) -> None:
    """Config overrides as trailing ``section.field=value`` words (or ``--section.field=value``)."""
    parser.add_argument(
        "overrides", nargs="*", metavar="section.field=value",
        help="config overrides, e.g. base.depth=4 sampler.steps=8",
    )


def add_preset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="toy", choices=sorted(PRESETS),
                        help="model sizes to start from (default: toy, the Shapes world on a CPU)")


def add_seed_argument(parser: argparse.ArgumentParser, what: str = "sampling seed") -> None:
    """``--seed``, checked by :func:`muse_mini.config.check_seed` (the range the Python API takes too)."""
    parser.add_argument("--seed", type=int, default=0, help=f"{what}, an integer in {SEED_RANGE_TEXT} (default 0)")


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (training and datasets)")


def check_out_dir(path, flag: str = "--out") -> Path:
    """``path`` as a directory to write into; checked before any work so a file there is never clobbered."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag}: {path} is an existing file; expected a directory (or a path to create)")
    return path
