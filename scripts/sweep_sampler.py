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
The toy preset's sampler defaults were checked with this sweep
(docs/results.md).
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from muse_mini.data.evaluator import caption_accuracy
from muse_mini.pipeline import Pipeline
from muse_mini.data.shapes import canonical_prompts

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="pipeline directory with a finished base stage")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", choices=["base", "superres"], default="base",
                        help="which sampler to sweep (superres needs a trained super-res stage)")
    args = parser.parse_args()

    base = args.stage == "base"
    pipe = Pipeline.from_run(args.run, require_superres=not base)
    defaults, grid = (pipe.cfg.sampler, GRID) if base else (pipe.cfg.superres_sampler, SUPERRES_GRID)
    prompts = canonical_prompts("train", n=args.prompts)
    settings = [{}] + [{name: v} for name, values in grid.items() for v in values
                       if v != getattr(defaults, name)]
    rows = []
    for change in tqdm(settings, desc=f"{args.stage} sampler settings"):
        start = time.perf_counter()
        options = change if base else {"superres_sampler": dataclasses.replace(defaults, **change)}
        gen = pipe.generate(prompts, num_per_prompt=args.samples, seed=args.seed, stage=args.stage, **options)
        result = caption_accuracy(gen.images, gen.prompts)
        row = {"change": change or "defaults", "accuracy": result["accuracy"],
               "per_kind": {k: v["accuracy"] for k, v in result["per_kind"].items()},
               "n_images": result["n_images"], "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        tqdm.write(json.dumps(row))
    out = Path(args.run) / "samples" / ("sampler_sweep.json" if base else "sampler_sweep_superres.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"stage": args.stage, "defaults": dataclasses.asdict(defaults), "rows": rows},
                              indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
