"""The ``muse-mini`` command line: argparse only, one module per command group.

Each module here registers its subcommands (``add_parsers``) and turns
parsed flags into calls of the library; no library module parses arguments.
"""

from __future__ import annotations

import argparse
import sys

from muse_mini.parallel import hosts

from muse_mini.cli import (
    course, demo, edit, ema, evaluate, export, params, plan, reconstruct, sample, shapes, tokenize, train,
)

# In the order `--help` lists them.
COMMAND_MODULES = (shapes, params, plan, train, tokenize, reconstruct, ema, export, sample, edit, evaluate, demo,
                   course)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muse-mini", description="Muse text-to-image, from the Shapes toy world to the paper's 3B model."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return parser


def _split_dashed_overrides(argv: list[str]) -> list[str]:
    """Let ``--base.depth=4`` work as well as ``base.depth=4``."""
    return [a[2:] if a.startswith("--") and "." in a.split("=", 1)[0] else a for a in argv]


def _silence_datasets() -> None:
    """``--no-progress`` also hides the Hugging Face ``datasets`` download and map bars."""
    try:
        import datasets
    except ImportError:
        return
    datasets.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    # A job launched as several processes (pod slice, srun, MUSE_COORDINATOR) joins up first.
    try:
        hosts.initialize()
    except ValueError as err:
        print(f"muse-mini: error: {err}", file=sys.stderr)
        return 2
    argv = _split_dashed_overrides(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    if getattr(args, "no_progress", False):
        _silence_datasets()
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        # Bad input: say what is wrong in one line, not a stack trace.
        print(f"muse-mini {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)
