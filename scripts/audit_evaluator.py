"""Audit the Shapes evaluator against a second, deliberately simple judge on generated images.

    .venv/bin/python scripts/audit_evaluator.py runs/full --samples 128 --out docs/evaluator_audit

Generates base (32×32) and super-res (64×64) images for unseen prompts, with
guidance and without (the unguided ones hold more mistakes to disagree on),
judges each with :mod:`muse_mini.data.evaluator` and with ``tests/spec_checker.py``
(written from ``docs/shapes.md`` alone), and writes ``audit.json`` (the
agreement table by stage and kind) and ``disagreements_STAGE.png`` (every image
the judges disagree on, with both judges' reasons).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import spec_checker  # noqa: E402

from muse_mini import viz  # noqa: E402
from muse_mini.data import evaluator  # noqa: E402
from muse_mini.data.captions import parse_caption  # noqa: E402
from muse_mini.evaluation.report import evaluation_prompts  # noqa: E402
from muse_mini.pipeline import Pipeline  # noqa: E402


def judge(images, captions) -> list[dict]:
    rows = []
    for image, caption, verdict in zip(images, captions, evaluator.evaluate_batch(images, captions)):
        simple = spec_checker.reasons(image, caption)
        rows.append({"caption": caption, "kind": parse_caption(caption).kind, "evaluator": verdict.ok,
                     "simple": not simple, "evaluator_reasons": verdict.reasons, "simple_reasons": simple})
    return rows


def agreement(rows: list[dict]) -> dict:
    ev, si = np.array([r["evaluator"] for r in rows]), np.array([r["simple"] for r in rows])
    return {"n": len(rows), "evaluator_accepts": float(ev.mean()), "simple_accepts": float(si.mean()),
            "both_accept": float((ev & si).mean()), "only_evaluator": float((ev & ~si).mean()),
            "only_simple": float((~ev & si).mean())}


def disagreement_figure(images, rows, path: Path) -> int:
    picks = [i for i, r in enumerate(rows) if r["evaluator"] != r["simple"]]
    if not picks:
        return 0
    titles = []
    for i in picks:
        r = rows[i]
        why = r["simple_reasons"] if r["evaluator"] else r["evaluator_reasons"]
        who = "only evaluator accepts" if r["evaluator"] else "only simple accepts"
        titles.append(f"{r['caption']} | {who}: {'; '.join(why)[:90]}")
    viz.save(viz.image_grid(np.stack([images[i] for i in picks]), titles, ncols=6, size=2.4, wrap=30), path)
    return len(picks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="pipeline directory (runs/demo, runs/full)")
    parser.add_argument("--samples", type=int, default=128, help="unseen prompts per split (default 128)")
    parser.add_argument("--out", default="docs/evaluator_audit", help="directory for audit.json and the figures")
    args = parser.parse_args()
    start, out = time.perf_counter(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline.from_run(args.run)
    prompts = evaluation_prompts(args.samples)
    captions = [c for split in prompts.captions.values() for c in split]
    stages = ("base", "superres") if pipe.has_superres else ("base",)
    report = {"run": args.run, "samples": args.samples, "machine": platform.processor() or platform.machine()}
    for stage in stages:
        images, rows = [], []
        for guidance in (None, 0.0):
            gen = pipe.generate(captions, seed=0, stage=stage, **({} if guidance is None else {"guidance": guidance}))
            images.append(gen.images if stage == "superres" else gen.base_images)
            rows += judge(images[-1], captions)
        images = np.concatenate(images)
        report[stage] = {"all": agreement(rows), **{kind: agreement([r for r in rows if r["kind"] == kind])
                                                    for kind in sorted({r["kind"] for r in rows})}}
        report[stage]["disagreements"] = disagreement_figure(images, rows, out / f"disagreements_{stage}.png")
        print(stage, json.dumps(report[stage]["all"]), flush=True)
    report["seconds"] = time.perf_counter() - start
    (out / "audit.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'audit.json'}")


if __name__ == "__main__":
    main()
