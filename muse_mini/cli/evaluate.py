"""``muse-mini train-features`` and ``muse-mini evaluate``: the judges of generated images.

``train-features`` trains the Shapes feature network behind Shapes-FID
(:mod:`muse_mini.evaluation.features`) and reports how well it reads held-out
scenes; the project ships the weights it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from muse_mini.cli.common import RUN_HELP
from muse_mini.config.checks import check_int, check_number

HELDOUT_SEED = 8  # the feature network's held-out scenes (it trains on seed 7, models on seed 0)


def add_parsers(sub) -> None:
    from muse_mini.evaluation.features import SHIPPED, FeatureTraining

    d = FeatureTraining()
    p = sub.add_parser("train-features", help="train the Shapes feature network behind Shapes-FID")
    p.add_argument("--out", default=str(SHIPPED), help=f"weights file to write (default: the shipped {SHIPPED.name})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate, help=f"default {d.learning_rate}")
    p.add_argument("--num-examples", type=int, default=d.num_examples, help=f"Shapes scenes (default {d.num_examples})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"Shapes seed of the training scenes (default {d.seed})")
    p.add_argument("--heldout", type=int, default=1024, help="held-out scenes to score it on (default 1024)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train_features)

    e = sub.add_parser("evaluate", help="judge a trained pipeline: caption accuracy, Shapes-FID, diversity")
    e.add_argument("--run", required=True, help=RUN_HELP)
    e.add_argument("--out", required=True, help="directory for report.json, plots and stored samples")
    e.add_argument("--prompts", default=None, help="canonical captions, one per line (default: unseen scenes)")
    e.add_argument("--samples", type=int, default=128, help="unseen scenes per split (default 128)")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="sampling seeds (default 0 1)")
    e.add_argument("--steps", type=int, default=None, help="base decoding steps (default: the run's)")
    e.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the run's)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=run_evaluate)


def run_train_features(args) -> None:
    from muse_mini.evaluation.features import FeatureTraining, save_feature_net, train_feature_net
    from muse_mini.evaluation.features import heldout_accuracy

    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out: {out} is a directory; expected a file such as {out / 'shapes_features.eqx'}")
    check_int("--steps", args.steps, 1)
    check_int("--batch-size", args.batch_size, 1)
    check_number("--learning-rate", args.learning_rate, low_open=True)
    check_int("--num-examples", args.num_examples, 2)
    check_int("--seed", args.seed, 0)  # a Shapes seed: non-negative
    check_int("--heldout", args.heldout, 2)
    settings = FeatureTraining(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                               num_examples=args.num_examples, seed=args.seed)
    model = train_feature_net(settings, progress=not args.no_progress)
    accuracy = heldout_accuracy(model, args.heldout, HELDOUT_SEED)
    save_feature_net(out, model, settings, accuracy=accuracy)
    print(f"wrote {out}")
    print(json.dumps(accuracy, indent=1))


def run_evaluate(args) -> None:
    from muse_mini.config.checks import check_seed

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file; expected a directory for the report")
    check_int("--samples", args.samples, 2)
    for seed in args.seeds:
        check_seed("--seeds", seed)
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds: expected distinct seeds, got {args.seeds}")
    if args.prompts is not None and not Path(args.prompts).is_file():
        raise FileNotFoundError(f"--prompts: no such file {args.prompts}")
    overrides = {k: v for k, v in {"steps": args.steps, "guidance": args.guidance}.items() if v is not None}
    from muse_mini.evaluation.report import evaluate_run

    report = evaluate_run(args.run, out, samples=args.samples, seeds=tuple(args.seeds), prompts_file=args.prompts,
                          progress=not args.no_progress, **overrides)
    for stage, splits in report["stages"].items():
        for split, f in splits.items():
            fid = "n/a" if f["shapes_fid"] is None else (
                f"{f['shapes_fid']:.2f} (real floor {f['shapes_fid_real_floor']:.2f})")
            print(f"{stage:27} {split:8} accuracy {f['accuracy']:.1%} of {f['n_images']}  Shapes-FID {fid}")
    print(f"wrote {out / 'report.json'}")
