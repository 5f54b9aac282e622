"""``muse-mini ema``: average a transformer run's checkpoints offline into ``model_ema.eqx`` (Muse §3).

The paper's recipe: checkpoint every 5000 steps, then average with decay 0.7
(train with ``base_train.keep_every=5000`` so those checkpoints are kept, and
run ``muse-mini ema --run DIR --every 5000``). ``muse-mini sample --ema``
then samples with the averaged weights.
"""

from __future__ import annotations

from muse_mini.runs.ema import PAPER_DECAY


def add_parsers(sub) -> None:
    p = sub.add_parser("ema", help="average a base or super-res run's checkpoints (offline EMA, §3)")
    p.add_argument("--run", required=True, help="a base or super-res run directory, e.g. runs/demo/base")
    p.add_argument("--decay", type=float, default=PAPER_DECAY,
                   help=f"EMA decay in (0, 1); the newest checkpoint gets weight 1 - decay (default {PAPER_DECAY})")
    p.add_argument("--every", type=int, default=None,
                   help="average only checkpoints whose step is a multiple of N (the paper: 5000; default: all)")
    p.set_defaults(func=run)


def run(args) -> None:
    from muse_mini.runs.checkpoint import read_header
    from muse_mini.runs.load import average_checkpoints

    path = average_checkpoints(args.run, decay=args.decay, every=args.every)
    steps = read_header(path)["metadata"]["ema"]["steps"]
    print(f"averaged {len(steps)} checkpoint(s) of {args.run} (steps {', '.join(map(str, steps))}; "
          f"decay {args.decay}) into {path}")
