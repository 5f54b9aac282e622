"""Sweep a sampler's settings against caption accuracy (§2.7, §2.8).

    .venv/bin/python scripts/sweep_sampler.py runs/demo --prompts 48 --samples 4
    .venv/bin/python scripts/sweep_sampler.py runs/full --stage superres

Starting from the preset's sampler, change one setting at a time (steps,
temperature, choice temperature, guidance scale and schedule) and measure the
evaluator's caption accuracy on canonical in-distribution prompts. With
``--stage base`` (the default) the base sampler changes and the 32×32
outputs are scored; with ``--stage superres`` the base sampler keeps its
defaults (same seed, so the same 32×32 images every row) and the super-res
sampler changes, scored on the 64×64 outputs. Prints one JSON line per
setting and writes them all to ``RUN/samples/sampler_sweep[_superres].json``.

Several runs (one recipe's training seeds) and ``--try`` combinations give
the comparison that chose the toy preset's base sampler (docs/archive/sampler_selection_quick.json):

    .venv/bin/python scripts/sweep_sampler.py runs/quick-seed{0,1,2} --seed 1 --holdout 16 \
        --try steps=12,choice_temperature=1,guidance=2 --try steps=24,choice_temperature=2,guidance=1.5 \
        --out sampler_selection.json

Every row then also gets the mean and minimum over the runs; choose on a
``--seed`` other than the demo's 0, so the chosen setting is reported on
fresh samples.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from muse_mini.config import SamplerConfig, apply_overrides
from muse_mini.data.evaluator import caption_accuracy
from muse_mini.data.captions import canonical_prompts
from muse_mini.pipeline import Pipeline

GRID = {
    "steps": [8, 12, 24],
    "temperature": [0.05, 0.2, 0.5, 1.0],
    "choice_temperature": [0.0, 1.0, 4.5],
    "guidance": [0.0, 1.0, 2.0, 4.0],
    "guidance_schedule": ["constant", "linear"],
}
# Super-res decodes from a nearly complete condition, so the sweep also tries
# very few steps and other reveal schedules.
SUPERRES_GRID = {
    "steps": [1, 4, 8, 16],
    "temperature": [0.01, 0.2, 0.5],
    "choice_temperature": [0.0, 1.0, 4.5],
    "guidance": [0.0, 1.0, 2.0],
    "schedule": ["cosine", "linear", "square"],
}


def _setting(text: str) -> dict:
    """``steps=24,guidance=1.5`` as sampler overrides, parsed against ``SamplerConfig``'s field types."""
    items = text.split(",")
    try:
        cfg = apply_overrides(SamplerConfig(), items)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    names = [item.partition("=")[0].removeprefix("--") for item in items]
    return {name: getattr(cfg, name) for name in names}


def _accuracy(pipe, prompts, args, change, base: bool) -> dict:
    defaults = pipe.cfg.sampler if base else pipe.cfg.superres_sampler
    options = change if base else {"superres_sampler": dataclasses.replace(defaults, **change)}
    gen = pipe.generate(prompts, num_per_prompt=args.samples, seed=args.seed, stage=args.stage, **options)
    return caption_accuracy(gen.images, gen.prompts)


def _summary(table: dict) -> list[dict]:
    """Mean and minimum over the runs of each setting's accuracies."""
    rows = []
    for key, by_run in table.items():
        row = {"change": json.loads(key)}
        for split in next(iter(by_run.values())):
            values = [r[split] for r in by_run.values()]
            row[split] = {"mean": float(np.mean(values)), "min": min(values), "by_run": values}
        rows.append(row)
        print(f"{key:70s} " + "  ".join(f"{k} mean {v['mean']:.1%} min {v['min']:.1%}"
                                       for k, v in row.items() if k != "change"))
    return rows


def main() -> None:  # long: one sweep, its files and the summary over runs
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="pipeline directories with a finished base stage")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", choices=["base", "superres"], default="base",
                        help="which sampler to sweep (superres needs a trained super-res stage)")
    parser.add_argument("--try", dest="tries", type=_setting, action="append", default=None,
                        metavar="NAME=VALUE[,NAME=VALUE]", help="settings to compare instead of the one-at-a-time grid")
    parser.add_argument("--holdout", type=int, default=0, help="also score this many hold-out prompts")
    parser.add_argument("--out", type=Path, default=None, help="the summary over runs, as JSON")
    args = parser.parse_args()

    base = args.stage == "base"
    splits = {"train": canonical_prompts("train", n=args.prompts)}
    if args.holdout:
        splits["holdout"] = canonical_prompts("holdout", n=args.holdout)
    table: dict = {}
    for run in args.runs:
        pipe = Pipeline.from_run(run, require_superres=not base)
        defaults, grid = (pipe.cfg.sampler, GRID) if base else (pipe.cfg.superres_sampler, SUPERRES_GRID)
        settings = args.tries or [{}] + [{name: v} for name, values in grid.items() for v in values
                                         if v != getattr(defaults, name)]
        rows = []
        for change in tqdm(settings, desc=f"{run}: {args.stage} sampler settings"):
            start = time.perf_counter()
            results = {split: _accuracy(pipe, prompts, args, change, base) for split, prompts in splits.items()}
            result = results["train"]
            row = {"change": change or "defaults", "accuracy": result["accuracy"],
                   "per_kind": {k: v["accuracy"] for k, v in result["per_kind"].items()},
                   "n_images": result["n_images"], "seconds": round(time.perf_counter() - start, 1)}
            if args.holdout:
                row["holdout_accuracy"] = results["holdout"]["accuracy"]
            rows.append(row)
            table.setdefault(json.dumps(change), {})[run] = {s: r["accuracy"] for s, r in results.items()}
            tqdm.write(json.dumps(row))
        out = Path(run) / "samples" / ("sampler_sweep.json" if base else "sampler_sweep_superres.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"stage": args.stage, "defaults": dataclasses.asdict(defaults), "seed": args.seed,
                                   "rows": rows}, indent=2))
        print(f"wrote {out}")
    if len(args.runs) > 1 or args.out:
        summary = {"runs": args.runs, "stage": args.stage, "seed": args.seed, "samples": args.samples,
                   "prompts": {s: len(p) for s, p in splits.items()}, "rows": _summary(table)}
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(summary, indent=2))
            print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
