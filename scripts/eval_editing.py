"""Editing on Shapes (§3.3): inpainting, preservation, mask-free editing and outpainting, over seeds.

    .venv/bin/python scripts/eval_editing.py runs/demo --n 64 --seeds 0 1 2

Cases come from Shapes seed ``--case-seed`` (training uses seed 0), 64 per
task by default; :mod:`muse_mini.evaluation.editing_tasks` builds and scores them.
Each figure is reported per stage (base 32×32, super-res 64×64) as the mean
and spread over the sampling seeds, beside the same model's text-to-image
accuracy on the same prompts. Writes ``--out`` (JSON) and ``--figure``
(examples of every task).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from muse_mini import viz
from muse_mini.evaluation.editing_tasks import inpaint_cases, mask_free_cases, outpaint_cases, run_tasks
from muse_mini.pipeline import Pipeline


def summarise(reports: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every figure."""
    out = {}
    for stage, tasks in reports[0].items():
        for task, figures in tasks.items():
            for name in figures:
                values = np.array([r[stage][task][name] for r in reports])
                out.setdefault(stage, {}).setdefault(task, {})[name] = {
                    "mean": float(values.mean()), "std": float(values.std()), "values": values.tolist()}
    return out


def example_figure(pipe, path: Path, case_seed: int, iterations: int, guidance: float | None = None) -> None:
    """Four cases per task: the input (masked area tinted), the edit, and its prompt."""
    rows, titles = [], []
    for task, cases in (("inpaint", inpaint_cases(4, case_seed)), ("mask-free", mask_free_cases(4, case_seed)),
                        ("outpaint", outpaint_cases(4, case_seed))):
        images, masks = np.stack([c.image for c in cases]), np.stack([c.mask for c in cases])
        prompts = [c.prompt for c in cases]
        if task == "inpaint":
            result = pipe.inpaint(images, masks, prompts, seed=0)
        elif task == "outpaint":
            result = pipe.outpaint(images, prompts, keep=~masks, seed=0)
        else:
            settings = {} if guidance is None else {"guidance": guidance}
            result = pipe.edit(images, prompts, iterations=iterations, seed=0, **settings)
        shown = images.copy()
        if task != "mask-free":
            shown[masks] = (0.5 * shown[masks] + 0.5 * np.array([255, 80, 160])).astype(np.uint8)
        edited = result.images
        if edited.shape[1] != shown.shape[1]:  # a pipeline without super-res: its 32×32 output, doubled
            edited = edited.repeat(shown.shape[1] // edited.shape[1], 1).repeat(shown.shape[1] // edited.shape[1], 2)
        for i in range(4):
            rows += [shown[i], edited[i]]
            titles += [f"{task}: input", prompts[i]]
    viz.save(viz.image_grid(np.stack(rows), titles, ncols=8, size=1.7), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="pipeline directory (runs/demo, runs/full)")
    parser.add_argument("--n", type=int, default=64, help="cases per task (default 64)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds")
    parser.add_argument("--case-seed", type=int, default=1000, help="Shapes seed of the cases (training: 0)")
    parser.add_argument("--iterations", type=int, default=100, help="mask-free iterations (default 100)")
    parser.add_argument("--mask-free-guidance", type=float, default=None,
                        help="the mask-free walk's constant guidance (default: the run's edit.guidance)")
    parser.add_argument("--out", default=None, help="JSON report (default RUN/samples/editing.json)")
    parser.add_argument("--figure", default=None, help="PNG of examples (default RUN/samples/editing.png)")
    args = parser.parse_args()
    pipe = Pipeline.from_run(args.run)
    start, reports = time.perf_counter(), []
    for seed in args.seeds:
        reports.append(run_tasks(pipe, n=args.n, case_seed=args.case_seed, seed=seed, iterations=args.iterations,
                                 mask_free_guidance=args.mask_free_guidance))
        print(f"seed {seed}: {json.dumps(reports[-1])}", flush=True)
    summary = summarise(reports)
    out = Path(args.out or Path(args.run) / "samples" / "editing.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": str(args.run), "n": args.n, "seeds": args.seeds, "case_seed": args.case_seed,
                               "iterations": args.iterations, "seconds": time.perf_counter() - start,
                               "summary": summary}, indent=2))
    for stage, tasks in summary.items():
        for task, figures in tasks.items():
            shown = ", ".join(f"{k} {v['mean']:.3f}±{v['std']:.3f}" for k, v in figures.items())
            print(f"{stage:8} {task:9} {shown}")
    example_figure(pipe, Path(args.figure or out.with_suffix(".png")), args.case_seed, args.iterations,
                   args.mask_free_guidance)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
