"""The ``muse-mini`` command line: one subcommand per stage.

Each stage module contributes its own subcommands through ``add_parsers``;
this file only gathers them, so a newcomer finds a command's code next to the
stage it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute subcommands, in the order `--help` lists them.
_COMMAND_MODULES = (
    "muse_mini.cli_shapes",
    "muse_mini.cli_params",
    "muse_mini.tokenizer_stage",
    "muse_mini.base_stage",
    "muse_mini.superres_stage",
    "muse_mini.pipeline",
    "muse_mini.demo",
)


def add_overrides_argument(parser: argparse.ArgumentParser) -> None:
    """Config overrides as trailing ``section.field=value`` words (or ``--section.field=value``)."""
    parser.add_argument(
        "overrides", nargs="*", metavar="section.field=value",
        help="config overrides, e.g. base.depth=4 sampler.steps=8",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muse-mini", description="Muse text-to-image, from the Shapes toy world to the paper's 3B model."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that stage is not implemented yet
                continue
            raise
        module.add_parsers(sub)
    return parser


def _split_dashed_overrides(argv: list[str]) -> list[str]:
    """Let ``--base.depth=4`` work as well as ``base.depth=4``."""
    return [a[2:] if a.startswith("--") and "." in a.split("=", 1)[0] else a for a in argv]


def main(argv: list[str] | None = None) -> int:
    argv = _split_dashed_overrides(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        # Bad input: say what is wrong in one line, not a stack trace.
        print(f"muse-mini {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)
