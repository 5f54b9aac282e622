"""``muse-mini demo``: train every toy stage (skipping finished ones) and render the results."""

from __future__ import annotations

from muse_mini.cli.common import add_overrides_argument, add_progress_argument, check_out_dir
from muse_mini.config import RECIPES, check_seed
from muse_mini.config.checks import SEED_RANGE_TEXT
from muse_mini.demo import run_demo


def add_parsers(sub) -> None:
    p = sub.add_parser("demo", help="train every toy stage (skipping finished ones) and render results")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="quick",
                   help="quick: the make-demo recipe; full: the same models trained for longer; smoke: a few steps each")
    p.add_argument("--out", default=None, help="output directory (default: runs/demo quick, runs/full full)")
    p.add_argument("--seed", type=int, default=None,
                   help=f"training seed of every stage, an integer in {SEED_RANGE_TEXT} (default: each stage's config, 0); "
                        "the data stay the same")
    p.add_argument("--no-eval", action="store_true", help="skip the caption-accuracy evaluation")
    add_progress_argument(p)
    add_overrides_argument(p)
    p.set_defaults(func=run)


def run(args) -> None:
    if args.seed is not None:
        check_seed("--seed", args.seed)
    if args.out:
        check_out_dir(args.out)
    run_demo(args.recipe, args.out, progress=not args.no_progress, evaluate=not args.no_eval,
             overrides=args.overrides, seed=args.seed)
