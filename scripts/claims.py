"""The paper's claims in miniature: writes a results page and its figures.

    .venv/bin/python scripts/claims.py runs/demo --out docs/claims --samples 64

Runs every measurement of :mod:`muse_mini.evaluation.claims` on one trained
pipeline and writes ``OUT/claims.json``, ``OUT/claims.md`` (tables, with the
command and the machine) and one PNG per claim.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import matplotlib.pyplot as plt
from tqdm.auto import tqdm

from muse_mini.evaluation import claims
from muse_mini.evaluation.report import evaluate_run, evaluation_prompts, plain_highres_decoder
from muse_mini.pipeline import Pipeline
from muse_mini.viz.figures import save


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows])


def measure(pipe, run: Path, samples: int, out: Path) -> dict:
    prompts = evaluation_prompts(samples)
    captions, scenes = prompts.captions["train"], prompts.scenes["train"]
    jobs = {
        "figure8": lambda: claims.guidance_temperature_sweep(pipe, captions, scenes),
        "guidance_schedules": lambda: claims.guidance_schedules(pipe, captions),
        "steps": lambda: claims.steps_sweep(pipe, captions, scenes),
        "superres_vs_bicubic": lambda: claims.superres_against_bicubic(pipe, captions, scenes),
        "decoder_vs_tokenizer": lambda: (None if (plain := plain_highres_decoder(run, pipe)) is None else
                                         claims.decoder_against_tokenizer(pipe.highres_tokenizer, plain, scenes)),
        "count_and_composition": lambda: claims.count_and_composition(
            evaluate_run(run, out / "evaluate", samples=samples, seeds=(0, 1), pipe=pipe, progress=False)),
    }
    results = {}
    for name, job in tqdm(jobs.items(), desc="claims"):
        results[name] = job()
    results["figure8_front"] = claims.pareto_front(results["figure8"])
    results["diversity_at_equal_accuracy"] = claims.diversity_at_equal_accuracy(results["guidance_schedules"])
    return results


def plot(results: dict, out: Path) -> None:
    sweep, front = results["figure8"], results["figure8_front"]
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    ax.scatter([p["shapes_fid"] for p in sweep], [p["accuracy"] for p in sweep])
    ax.plot([sweep[i]["shapes_fid"] for i in front], [sweep[i]["accuracy"] for i in front], "k--")
    for p in sweep:
        ax.annotate(f"g{p['guidance']:g} T{p['temperature']:g}", (p["shapes_fid"], p["accuracy"]), fontsize=6)
    ax.set_xlabel("Shapes-FID"), ax.set_ylabel("caption accuracy"), ax.set_title("Figure 8 in miniature")
    save(fig, out / "figure8.png")
    rows = results["steps"]
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    ax.plot([r["steps"] for r in rows[:-1]], [r["accuracy"] for r in rows[:-1]], "o-", label="parallel decoding")
    ax.axhline(rows[-1]["accuracy"], ls="--", c="k", label="one token per step")
    ax.set_xscale("log", base=2), ax.set_xlabel("steps"), ax.set_ylabel("caption accuracy"), ax.legend()
    save(fig, out / "steps.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="pipeline directory (runs/demo, runs/full)")
    parser.add_argument("--out", default="docs/claims", help="directory for claims.json, claims.md and the plots")
    parser.add_argument("--samples", type=int, default=64, help="unseen scenes to prompt with (default 64)")
    args = parser.parse_args()
    out, start = Path(args.out), time.perf_counter()
    results = measure(Pipeline.from_run(args.run), Path(args.run), args.samples, out)
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
    (out / "claims.json").write_text(json.dumps({"run": args.run, "samples": args.samples, "machine": machine,
                                                 "seconds": time.perf_counter() - start, **results}, indent=2))
    page = [f"# Claims in miniature: `{args.run}`", "",
            f"`python scripts/claims.py {args.run} --out {args.out} --samples {args.samples}`, on {machine}.", ""]
    for name in ("figure8", "guidance_schedules", "diversity_at_equal_accuracy", "steps"):
        if results[name]:
            page += [f"## {name}", "", _table(results[name]), ""]
    for name in ("superres_vs_bicubic", "decoder_vs_tokenizer", "count_and_composition"):
        page += [f"## {name}", "", "```json", json.dumps(results[name], indent=1), "```", ""]
    (out / "claims.md").write_text("\n".join(page))
    plot(results, out)
    print(f"wrote {out / 'claims.md'}")


if __name__ == "__main__":
    main()
