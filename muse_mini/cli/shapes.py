"""``muse-mini shapes``: write Shapes-world samples to a folder of PNGs.

Writes ``DIR/{index:05d}.png`` (64×64 RGB) and ``DIR/captions.txt`` (one
canonical caption per line, in index order); the contract is ``docs/shapes.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from muse_mini.cli.common import check_out_dir
from muse_mini.data import shapes
from muse_mini.data.captions import SPLITS


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``shapes`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("shapes", help="write Shapes-world images and captions to a folder",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=SPLITS, default="train",
                   help="train (no hold-out pairs) or holdout (each scene has one)")
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--start", type=int, default=0, help="index of the first sample")
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.set_defaults(func=main)
    return p


add_parsers = add_parser  # the name muse_mini.cli looks for in each command module


def main(args: argparse.Namespace) -> int:
    """Write the samples; returns 0 (process exit status)."""
    out = check_out_dir(args.out)
    images, _, scenes = shapes.generate(args.n, seed=args.seed, split=args.split,
                                        start=getattr(args, "start", 0))
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(out / f"{i:05d}.png")
    (out / "captions.txt").write_text("".join(s.caption + "\n" for s in scenes))
    print(f"wrote {len(scenes)} {args.split} samples to {out}")
    return 0


if __name__ == "__main__":  # python -m muse_mini.cli.shapes shapes --out DIR
    parser = argparse.ArgumentParser(prog="muse-mini")
    add_parser(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    raise SystemExit(ns.func(ns))
