"""Where evaluator v4's diagonal spans change v3's verdict, on a run's demo images (issue 21).

``python docs/archive/evaluator_flips.py runs/quick-seed0 docs/archive/evaluator_v3_to_v4`` generates the
demo's evaluation images (48 in-distribution prompts × 4, sampling seed 0, base and super-res),
judges them with v4 and with v3 (v4 with ``shape_fit.SPAN_DIRECTIONS`` cut to rows and columns, which
is all that changed), prints both accuracies and writes ``OUT_{stage}.png``, the images whose verdict flips.
"""

import sys

import numpy as np

from muse_mini import viz
from muse_mini.data import evaluator as E, shape_fit
from muse_mini.data.shapes import canonical_prompts
from muse_mini.pipeline import Pipeline


def verdicts(images, prompts, diagonals: bool) -> list:
    directions = shape_fit.SPAN_DIRECTIONS
    if not diagonals:
        shape_fit.SPAN_DIRECTIONS = ("row", "column")
    try:
        return [E.evaluate(im, p) for im, p in zip(images, prompts)]
    finally:
        shape_fit.SPAN_DIRECTIONS = directions


def main(run: str, out: str) -> None:
    pipe = Pipeline.from_run(run)
    prompts = canonical_prompts("train", n=48)
    for stage in ("base", "superres"):
        gen = pipe.generate(prompts, num_per_prompt=4, seed=0, stage=stage)
        v3, v4 = (verdicts(gen.images, gen.prompts, d) for d in (False, True))
        flips = [i for i in range(len(v3)) if v3[i].ok != v4[i].ok]
        print(f"{stage}: v3 {np.mean([r.ok for r in v3]):.1%}, v4 {np.mean([r.ok for r in v4]):.1%}, "
              f"{len(flips)} flips")
        for i in flips:
            print(f"  {gen.prompts[i]!r}: v3 {'accepts' if v3[i].ok else 'rejects'}; v4: {'; '.join(v4[i].reasons)}")
        if flips:
            scale = 64 // gen.images.shape[1]
            big = np.repeat(np.repeat(gen.images[flips], scale, 1), scale, 2)
            viz.save(viz.image_grid(big, [gen.prompts[i] for i in flips], ncols=min(len(flips), 6)),
                     f"{out}_{stage}.png")


if __name__ == "__main__":
    main(*sys.argv[1:3])
