"""The README's pictures, made by the shipped Shapes pipeline with fixed seeds.

    .venv/bin/python scripts/make_readme_figures.py              # writes docs/images/*.png
    .venv/bin/python scripts/make_readme_figures.py --smoke --out /tmp/figs

- ``decoding_strip.png``: one prompt decoded step by step (§2.8, as in Figure 5), then its super-res output (§2.4);
- ``prompt_grid.png``: prompts (columns) × samples (rows); the prompts are picked on another seed (below);
- ``edit.png``: an inpainting (§3.3.1): input, region to regenerate, result under a new prompt.

Prompts for the grid: of the first ``candidates`` canonical training prompts (balanced over the four kinds),
the ``per_kind`` of each kind that the evaluator accepts most often on ``SELECTION_SEED``; the grid then shows
``pipe.generate(prompts, num_per_prompt=samples, seed=0)`` unselected, rejected images framed in red. Prints
each file with the caption facts (prompts, seeds, steps, evaluator verdicts) the README's lines give.
``--smoke`` uses fewer prompts and samples and the base stage only, for the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from muse_mini import viz
from muse_mini.data.captions import canonical_prompts, parse_caption
from muse_mini.data.evaluator import evaluate, evaluate_batch
from muse_mini.evaluation.editing_tasks import inpaint_cases
from muse_mini.models.codec import decode_tokens
from muse_mini.pipeline import Pipeline
from muse_mini.viz.widgets import trajectory_frames

ROOT = Path(__file__).resolve().parents[1]
STRIP_PROMPT = "a red circle above a blue square"  # the README's example prompt
SEED = 0  # every picture shown
SELECTION_SEED = 1  # the grid's prompts are chosen on this seed, never on the shown one
EDIT_CASES, EDIT_CASE_SEED, EDIT_CASE = 8, 1000, 2  # the inpainting case notebook 05 shows
SIZE = 1.1  # inches per image: the grid and the strip stay within viz.figures.PAGE_WIDTH
REJECTED = "#d62728"


@dataclasses.dataclass(frozen=True)
class Settings:
    candidates: int = 32
    per_kind: int = 2
    samples: int = 4
    strip_columns: int = 7
    stage: str | None = None  # the pipeline's last stage (super-res)


SMOKE = Settings(candidates=8, per_kind=1, samples=2, strip_columns=4, stage="base")


def decoding_strip(pipe: Pipeline, settings: Settings):
    """The base decoding of ``STRIP_PROMPT`` at evenly spread steps (still-masked tokens greyed), then the output."""
    gen = pipe.generate([STRIP_PROMPT], seed=SEED, stage=settings.stage)
    traj = gen.base_trajectory
    frames = trajectory_frames(traj, lambda ids: decode_tokens(pipe.tokenizer, np.asarray(ids)[None])[0])
    T = len(frames)
    masked_T = np.asarray(traj.mask_BxTxN[0]).sum(-1)
    steps = np.unique(np.linspace(0, T - 1, settings.strip_columns).round().astype(int))
    columns = {f"step {t + 1}/{T}: {masked_T[t]} masked": frames[t][None] for t in steps}
    side = gen.images.shape[1]
    if side != frames.shape[1]:
        columns[f"super-res {side}×{side}"] = gen.images[:1]
    fig = viz.side_by_side(columns, [STRIP_PROMPT], size=SIZE)
    verdict = "accepted" if evaluate(gen.images[0], STRIP_PROMPT).ok else "rejected"
    return fig, (f"{STRIP_PROMPT!r}, seed {SEED}, {T} base steps (shown: {[int(t) + 1 for t in steps]}); "
                 f"the evaluator: {verdict}")


def choose_prompts(pipe: Pipeline, settings: Settings) -> list[str]:
    """The ``per_kind`` candidates of each kind the evaluator accepts most often on ``SELECTION_SEED``."""
    candidates = canonical_prompts("train", n=settings.candidates)
    gen = pipe.generate(candidates, num_per_prompt=settings.samples, seed=SELECTION_SEED, stage=settings.stage)
    ok_PxS = np.array([e.ok for e in evaluate_batch(gen.images, gen.prompts)]).reshape(len(candidates), -1)
    kinds = [parse_caption(p).kind for p in candidates]
    chosen = []
    for kind in dict.fromkeys(kinds):
        mine = [i for i, k in enumerate(kinds) if k == kind]
        best = sorted(mine, key=lambda i: -ok_PxS[i].mean())[:settings.per_kind]  # stable: ties keep list order
        chosen += sorted(best)
    print(f"  chosen on seed {SELECTION_SEED} (accepted share): "
          + ", ".join(f"{candidates[i]!r} {ok_PxS[i].mean():.0%}" for i in chosen))
    return [candidates[i] for i in chosen]


def prompt_grid(pipe: Pipeline, settings: Settings):
    """Chosen prompts as columns, ``samples`` rows of ``generate(..., num_per_prompt, seed=SEED)``."""
    prompts = choose_prompts(pipe, settings)
    gen = pipe.generate(prompts, num_per_prompt=settings.samples, seed=SEED, stage=settings.stage)
    images_PxS = gen.images.reshape(len(prompts), settings.samples, *gen.images.shape[1:])
    ok_PxS = np.array([e.ok for e in evaluate_batch(gen.images, gen.prompts)]).reshape(len(prompts), -1)
    fig = viz.side_by_side(dict(zip(prompts, images_PxS)), [f"sample {s + 1}" for s in range(settings.samples)],
                           size=SIZE)
    axes_SxP = np.array(fig.axes).reshape(settings.samples, len(prompts))  # subplots' order: row by row
    for ax in axes_SxP[~ok_PxS.T]:
        for spine in ax.spines.values():
            spine.set(color=REJECTED, linewidth=2.5)
    return fig, (f"{len(prompts)} prompts, generate(num_per_prompt={settings.samples}, seed={SEED}), not selected; "
                 f"prompts chosen on seed {SELECTION_SEED}; red frame: rejected "
                 f"({ok_PxS.sum()} of {ok_PxS.size} accepted)")


def edit_figure(pipe: Pipeline, settings: Settings):
    """Inpainting (§3.3.1): an object's box regenerated under a prompt that recolours or reshapes it."""
    case = inpaint_cases(EDIT_CASES, seed=EDIT_CASE_SEED)[EDIT_CASE]
    result = pipe.inpaint(case.image, case.mask, case.prompt, seed=SEED, stage=settings.stage)
    columns = {"input": [case.image], "region to regenerate": [viz.mask_overlay(case.image, case.mask)],
               f"inpainted: {case.prompt!r}": [result.images[0]]}
    fig = viz.side_by_side(columns, size=2 * SIZE)
    verdict = "accepted" if evaluate(result.images[0], case.prompt).ok else "rejected"
    return fig, (f"inpaint_cases({EDIT_CASES}, seed={EDIT_CASE_SEED})[{EDIT_CASE}], {case.prompt!r}, seed {SEED}; "
                 f"the evaluator: {verdict}")


FIGURES = {"decoding_strip.png": decoding_strip, "prompt_grid.png": prompt_grid, "edit.png": edit_figure}


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="folder for the PNGs")
    parser.add_argument("--smoke", action="store_true", help="fewer prompts and samples, base stage only (tests)")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else Settings()
    start = time.perf_counter()
    pipe = Pipeline.from_pretrained("shapes")
    written = []
    for name, make in FIGURES.items():
        fig, caption = make(pipe, settings)
        path = viz.save(fig, args.out / name)
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB, {time.perf_counter() - start:.0f} s): {caption}")
        written.append(path)
    return written


if __name__ == "__main__":
    main()
