"""Train a recipe over several training seeds and report its caption accuracy as mean and spread.

    .venv/bin/python scripts/recipe_seeds.py --recipe quick --seeds 0 1 2 --out docs/recipe_seeds_quick.json

Seed ``S`` is ``muse-mini demo --recipe R --seed S --out runs/R-seedS``: every
stage trains with that seed on the same Shapes data. Finished stages are kept
and their evaluation is reused (or redone when the evaluator or sampler
changed), so an interrupted sweep resumes and a finished one only re-reports
(with the times its stages trained in).
Writes the per-seed table, the mean, standard deviation, minimum and maximum
of each accuracy, and the training times, to ``--out``, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
from pathlib import Path

from muse_mini.demo import run_demo

# ``section.field=value`` (or ``--section.field=value``): a config override, wherever it stands.
OVERRIDE = re.compile(r"(--)?[A-Za-z_]\w*\.\w+=.*")
# (stage, split) pairs reported, in the demo's accuracy.json
COLUMNS = (("base", "train"), ("base", "holdout"), ("superres", "train"), ("superres", "holdout"))


def summarise(per_seed: dict[int, dict]) -> dict:
    """Mean, spread and range of every column over seeds.

    ``per_seed[seed]`` holds ``{"accuracy": {"base/train": float, ...}, "minutes": float}``.
    """
    out = {}
    for stage, split in COLUMNS:
        name = f"{stage}/{split}"
        values = [row["accuracy"][name] for row in per_seed.values() if name in row["accuracy"]]
        if values:
            out[name] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                         "min": min(values), "max": max(values), "n": len(values)}
    minutes = [row["minutes"] for row in per_seed.values()]
    out["training_minutes"] = {"mean": statistics.fmean(minutes), "min": min(minutes), "max": max(minutes)}
    return out


def table(per_seed: dict[int, dict], summary: dict) -> str:
    """The per-seed rows and the summary as a Markdown table."""
    names = [f"{s}/{p}" for s, p in COLUMNS if f"{s}/{p}" in summary]
    lines = ["| seed | " + " | ".join(names) + " | training min |", "|---" * (len(names) + 2) + "|"]
    for seed, row in sorted(per_seed.items()):
        cells = [f"{100 * row['accuracy'][n]:.1f}%" for n in names]
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {row['minutes']:.1f} |")
    for stat in ("mean", "std", "min", "max"):
        cells = [f"{100 * summary[n][stat]:.1f}" + ("" if stat == "std" else "%") for n in names]
        lines.append(f"| {stat} | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


def seed_row(run: Path) -> dict:
    """One finished run's accuracies (``stage/split``) and training minutes."""
    results = json.loads((run / "samples" / "accuracy.json").read_text())["results"]
    timings = json.loads((run / "timings.json").read_text())
    accuracy = {f"{stage}/{split}": results[stage][split]["accuracy"]
                for stage, split in COLUMNS if stage in results}
    return {"accuracy": accuracy, "minutes": timings["training_total"] / 60, "run": str(run)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, with overrides allowed anywhere: ``--seeds 0 1 base.depth=4`` keeps the override for the config."""
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = [a for a in argv if OVERRIDE.fullmatch(a)]
    flags = [a for a in argv if a != "--" and not OVERRIDE.fullmatch(a)]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="quick", help="recipe name (default quick)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--runs", default="runs", help="parent of the runs/RECIPE-seedS directories (default runs)")
    parser.add_argument("--out", default=None, help="JSON report (default docs/recipe_seeds_RECIPE.json)")
    parser.add_argument("overrides", nargs="*", help="config overrides applied to every seed")
    args = parser.parse_args([*flags, "--", *overrides] if overrides else flags)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: expected distinct seeds, got {args.seeds}")
    return args


def main() -> None:
    args = parse_args()
    out = Path(args.out or f"docs/recipe_seeds_{args.recipe}.json")
    per_seed = {}
    for seed in args.seeds:
        run = Path(args.runs) / f"{args.recipe}-seed{seed}"
        run_demo(args.recipe, str(run), progress=False, overrides=args.overrides, seed=seed)  # resumes; keeps times
        per_seed[seed] = seed_row(run)
    summary = summarise(per_seed)
    report = {"recipe": args.recipe, "overrides": args.overrides, "seeds": per_seed, "summary": summary,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(table(per_seed, summary))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
