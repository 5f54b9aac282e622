"""``muse-mini ema``: average a transformer run's checkpoints offline into ``model_ema.eqx`` (Muse §3).

The paper's recipe: checkpoint every 5000 steps, then average with decay 0.7
(train with ``base_train.keep_every=5000`` so those checkpoints are kept, and
run ``muse-mini ema --run DIR --every 5000``). ``muse-mini sample --ema``
then samples with the averaged weights.
"""

from __future__ import annotations

from muse_mini.runs.ema import PAPER_DECAY

TRANSFORMER_STAGES = ("base", "superres")


def add_parsers(sub) -> None:
    p = sub.add_parser("ema", help="average a base or super-res run's checkpoints (offline EMA, §3)")
    p.add_argument("--run", required=True, help="a base or super-res run directory, e.g. runs/demo/base")
    p.add_argument("--decay", type=float, default=PAPER_DECAY,
                   help=f"EMA decay in (0, 1); the newest checkpoint gets weight 1 - decay (default {PAPER_DECAY})")
    p.add_argument("--every", type=int, default=None,
                   help="average only checkpoints whose step is a multiple of N (the paper: 5000; default: all)")
    p.set_defaults(func=run)


def model_skeleton(run_dir):
    """The abstract model (``eqx.filter_eval_shape``) of a base or super-res run, from its ``config.json``.

    Tokenizer runs are refused: their dead-code restarts replace codebook
    entries between checkpoints, so an average would blend unrelated codes, and
    the paper averages the transformer only.
    """
    import equinox as eqx
    import jax

    from muse_mini.models.build import build_base, build_superres
    from muse_mini.runs.layout import read_run_config
    from muse_mini.runs.load import read_stage

    meta = read_run_config(run_dir)["metadata"]
    if "config" not in meta or meta.get("stage") not in TRANSFORMER_STAGES:
        raise ValueError(f"--run: {run_dir} is a {meta.get('stage', 'unknown')!r} "
                         f"{'tokenizer ' if 'tokenizer' in meta else ''}run; "
                         "the offline EMA averages base or super-res transformer runs only")
    cfg, _ = read_stage(run_dir)
    build = build_base if meta["stage"] == "base" else build_superres
    return eqx.filter_eval_shape(lambda k: build(cfg, k), jax.random.key(0))


def run(args) -> None:
    from muse_mini.runs.checkpoint import read_header
    from muse_mini.runs.ema import check_decay, planned_steps, write_ema

    check_decay(args.decay)  # the cheap checks first: building the skeleton imports the models
    planned_steps(args.run, args.every)
    path = write_ema(args.run, decay=args.decay, every=args.every, like_model=model_skeleton(args.run))
    steps = read_header(path)["metadata"]["ema"]["steps"]
    print(f"averaged {len(steps)} checkpoint(s) of {args.run} (steps {', '.join(map(str, steps))}; "
          f"decay {args.decay}) into {path}")
