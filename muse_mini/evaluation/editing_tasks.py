"""Editing tasks on Shapes whose outcome a program checks (Muse §3.3), on scenes training never saw.

- inpainting: one object's box (plus 2 px) of a relation scene masked, the prompt recolours or reshapes it;
  preservation: tokens outside the mask keep their ids, pixels there match the tokenizer's reconstruction;
- mask-free editing: one object, prompted in another colour; accepted, centre within 4 px, size within 20%;
- outpainting: the left half kept with one object, the prompt asks for a second to its right.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from muse_mini.data import evaluator, shapes
from muse_mini.editing.methods import paste
from muse_mini.models.codec import encode_images, reconstruct
from muse_mini.data.captions import COLOURS, SHAPES, TRAIN_PAIRS, Requirements, canonical_caption, parse_caption

MARGIN = 2  # px at 64×64 around the masked object's box
MAX_SHIFT = 4.0  # px at 64×64: mask-free editing may move the object this far
MAX_SIZE_CHANGE = 0.2


@dataclasses.dataclass
class Case:
    image: np.ndarray  # uint8 64×64×3
    mask: np.ndarray  # bool 64×64: True = regenerate
    prompt: str
    original: shapes.ShapeObject | None = None  # mask-free: the object that should stay in place


def _box_mask(obj: shapes.ShapeObject) -> np.ndarray:
    x0, y0, x1, y1 = obj.box
    mask = np.zeros((shapes.CANVAS, shapes.CANVAS), bool)
    mask[max(0, y0 - MARGIN):y1 + MARGIN, max(0, x0 - MARGIN):x1 + MARGIN] = True
    return mask


def inpaint_cases(n: int, seed: int) -> list[Case]:
    """Relation scenes with object ``i % 2`` masked and recoloured (even i // 2) or reshaped (odd)."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        scene = shapes.sample_scene(seed, "train", i, kinds=("relation",))
        req, which = scene.requirements, i % 2
        pairs = [(req.colour, req.shape), (req.other_colour, req.other_shape)]
        colour, shape = pairs[which]
        if (i // 2) % 2 == 0:
            options = [c for c in COLOURS if c != colour and (c, shape) in TRAIN_PAIRS and (c, shape) not in pairs]
            new = (options[rng.integers(len(options))], shape)
        else:
            options = [s for s in SHAPES if s != shape and (colour, s) in TRAIN_PAIRS and (colour, s) not in pairs]
            new = (colour, options[rng.integers(len(options))])
        pairs[which] = new
        edited = dataclasses.replace(req, colour=pairs[0][0], shape=pairs[0][1],
                                     other_colour=pairs[1][0], other_shape=pairs[1][1])
        cases.append(Case(scene.render(), _box_mask(scene.objects[which]), canonical_caption(edited)))
    return cases


def mask_free_cases(n: int, seed: int) -> list[Case]:
    """One-object scenes prompted as the same shape and size in another colour."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        scene = shapes.sample_scene(seed, "train", i, kinds=("single",))
        req = scene.requirements
        options = [c for c in COLOURS if c != req.colour and (c, req.shape) in TRAIN_PAIRS]
        edited = dataclasses.replace(req, colour=options[rng.integers(len(options))])
        cases.append(Case(scene.render(), np.ones((shapes.CANVAS, shapes.CANVAS), bool),
                          canonical_caption(edited), original=scene.objects[0]))
    return cases


def outpaint_cases(n: int, seed: int) -> list[Case]:
    """The left object of a left/right relation scene, alone in the left half; the right half is generated."""
    rng = np.random.default_rng(seed)
    half = shapes.CANVAS // 2
    cases, index = [], 0
    while len(cases) < n:
        scene = shapes.sample_scene(seed, "train", index, kinds=("relation",))
        index += 1
        left = min(scene.objects, key=lambda o: o.cx)
        if scene.requirements.relation not in ("left of", "right of") or left.box[2] > half - MARGIN:
            continue
        others = [p for p in TRAIN_PAIRS if p != (left.colour, left.shape)]
        colour, shape = others[rng.integers(len(others))]
        req = Requirements("relation", left.colour, left.shape, relation="left of", other_colour=colour,
                           other_shape=shape)
        mask = np.zeros((shapes.CANVAS, shapes.CANVAS), bool)
        mask[:, half:] = True
        cases.append(Case(shapes.render([left]), mask, canonical_caption(req)))
    return cases


def accepted(images, prompts) -> np.ndarray:
    """The evaluator's verdict per image."""
    return np.array([e.ok for e in evaluator.evaluate_batch(images, prompts)])


def stays_in_place(images, cases: list[Case]) -> tuple[np.ndarray, np.ndarray]:
    """Mask-free: (centre moved <= 4 px, size within 20%) per image, for the object the prompt names."""
    moved_ok, size_ok = [], []
    for image, case in zip(images, cases):
        req = parse_caption(case.prompt)
        found = [o for o in evaluator.find_objects(image) if (o.colour, o.shape) == (req.colour, req.shape)]
        if len(found) != 1:
            moved_ok.append(False), size_ok.append(False)
            continue
        obj, orig = found[0], case.original
        moved_ok.append(bool(np.hypot(obj.cx - orig.cx, obj.cy - orig.cy) <= MAX_SHIFT))
        size_ok.append(bool(abs(obj.size / orig.size - 1) <= MAX_SIZE_CHANGE))
    return np.array(moved_ok), np.array(size_ok)


def psnr_outside(a_BxHxWx3, b_BxHxWx3, keep_BxHxW) -> np.ndarray:
    """PSNR (dB) per image over the pixels ``keep`` marks (inf when they agree exactly)."""
    diff = (a_BxHxWx3.astype(np.float64) - b_BxHxWx3.astype(np.float64)) ** 2
    mse = (diff.mean(-1) * keep_BxHxW).sum((1, 2)) / np.maximum(keep_BxHxW.sum((1, 2)), 1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-6))  # 108 dB: equal


def token_region_pixels(token_mask_BxN, side: int) -> np.ndarray:
    """A (B, N) token mask on a square grid, as (B, side, side) pixels."""
    grid = int(round(np.sqrt(token_mask_BxN.shape[1])))
    patch = side // grid
    cells = token_mask_BxN.reshape(-1, grid, grid)
    return np.kron(cells, np.ones((1, patch, patch), bool)).astype(bool)


def pasted(images, cases: list[Case]) -> np.ndarray:
    """What ``paste_back=True`` returns: the input's pixels outside each case's mask, at the images' size."""
    originals, masks = np.stack([c.image for c in cases]), np.stack([c.mask for c in cases])
    factor = originals.shape[1] // images.shape[1]
    if factor > 1:
        side = images.shape[1]
        originals = shapes.downsample(originals, factor)
        masks = masks.reshape(len(cases), side, factor, side, factor).any(axis=(2, 4))
    return paste(images, originals, masks)


def _stage_images(result, stage: str) -> np.ndarray:
    return result.base_images if stage == "base" else result.images


def _preservation(pipe, result, cases: list[Case], stage: str) -> dict:
    """Kept tokens unchanged (fraction of cases) and PSNR outside the regenerated tokens, edit vs reconstruction."""
    images64 = np.stack([c.image for c in cases])
    if stage == "base":
        vqgan, originals = pipe.tokenizer, shapes.downsample(images64)
        region, tokens = result.token_mask, np.asarray(result.base_trajectory.tokens_BxN)
    else:
        vqgan, originals = pipe.highres_tokenizer, images64
        region, tokens = np.asarray(result.superres_trajectory.initial_mask_BxN), np.asarray(
            result.superres_trajectory.tokens_BxN)
    before = encode_images(vqgan, originals).reshape(len(cases), -1)
    kept = ((tokens == before) | region).all(axis=1)
    outside = ~token_region_pixels(region, originals.shape[1])
    edited = psnr_outside(_stage_images(result, stage), originals, outside)
    recon = psnr_outside(reconstruct(vqgan, originals), originals, outside)
    return {"tokens_kept": float(kept.mean()), "psnr_outside_edit": float(edited.mean()),
            "psnr_outside_reconstruction": float(recon.mean())}


def _mask_free_figures(images, cases: list[Case]) -> dict:
    ok = accepted(images, [c.prompt for c in cases])
    in_place, same_size = stays_in_place(images, cases)
    return {"accepted": float(ok.mean()), "in_place": float(in_place.mean()), "same_size": float(same_size.mean()),
            "all_three": float((ok & in_place & same_size).mean())}


def run_tasks(pipe, *, n: int = 64, case_seed: int = 1000, seed: int = 0, iterations: int = 100,
              mask_free_guidance: float | None = None) -> dict:
    """Every task's figures for one sampling ``seed``, per stage, each beside ``text_to_image``: the
    same model generating the same prompts from nothing. ``mask_free_guidance`` None: the run's ``edit.guidance``."""
    stages = ("base", "superres") if pipe.has_superres else ("base",)
    stage = stages[-1]
    report = {stage_name: {} for stage_name in stages}
    tasks = {"inpaint": inpaint_cases(n, case_seed), "mask_free": mask_free_cases(n, case_seed),
             "outpaint": outpaint_cases(n, case_seed)}
    for task, cases in tasks.items():
        images = np.stack([c.image for c in cases])
        prompts = [c.prompt for c in cases]
        if task == "inpaint":
            result = pipe.inpaint(images, np.stack([c.mask for c in cases]), prompts, stage=stage, seed=seed)
        elif task == "outpaint":
            result = pipe.outpaint(images, prompts, keep=np.stack([~c.mask for c in cases]), stage=stage, seed=seed)
        else:
            guidance = {} if mask_free_guidance is None else {"guidance": mask_free_guidance}
            result = pipe.edit(images, prompts, iterations=iterations, stage=stage, seed=seed, **guidance)
        reference = pipe.generate(prompts, seed=seed, stage=stage)
        for name in stages:
            out = _stage_images(result, name)
            figures = {"accepted": float(accepted(out, prompts).mean()),
                       "text_to_image": float(accepted(_stage_images(reference, name), prompts).mean())}
            if task == "mask_free":
                figures.update(_mask_free_figures(out, cases))
                if name == "base":  # Figure 12 stops early too: the walk at a quarter and half of its length
                    for i in sorted({iterations // 4, iterations // 2} - {0, iterations}):
                        early = _mask_free_figures(result.iteration_images(i), cases)
                        figures.update({f"{k}_at_{i}": v for k, v in early.items()})
            else:
                figures["accepted_paste_back"] = float(accepted(pasted(out, cases), prompts).mean())
            if task == "inpaint":
                figures.update(_preservation(pipe, result, cases, name))
            report[name][task] = figures
    return report
