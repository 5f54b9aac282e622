"""The paper's claims, each measured in miniature on Shapes (notebook 07, ``scripts/claims.py``).

Each function takes a trained :class:`~muse_mini.pipeline.Pipeline` and the prompts of
:func:`muse_mini.evaluation.report.evaluation_prompts` and returns plain numbers:
Figure 8's front (caption accuracy standing in for CLIP score, Shapes-FID for FID),
§2.7's guidance schedules, §2.8's parallel steps, Table 1's super-res against bicubic,
§2.5's finetuned decoder, and §3.1's counts and composition.
"""

from __future__ import annotations

import numpy as np

from muse_mini.data import shapes
from muse_mini.data.evaluator import caption_accuracy
from muse_mini.evaluation.features import embed
from muse_mini.evaluation.fid import default_net, reference_stats, shapes_fid, shapes_stats
from muse_mini.evaluation.report import diversity
from muse_mini.models.codec import reconstruct
from muse_mini.models.images import psnr
from muse_mini.viz.figures import bicubic_upsample


def _judge(images, captions, reference, net=None) -> dict:
    """Caption accuracy and Shapes-FID (against ``reference``, a
    :class:`~muse_mini.evaluation.frechet.FeatureStats`) of one set of images."""
    return {"accuracy": caption_accuracy(images, captions)["accuracy"],
            "shapes_fid": shapes_fid(images, reference, net)}


def guidance_temperature_sweep(pipe, captions, scenes_64, *, guidances=(0.0, 1.0, 2.0, 4.0, 8.0),
                               temperatures=(0.5, 1.0, 1.5), seed: int = 0, net=None) -> list[dict]:
    """(guidance, temperature, accuracy, Shapes-FID) of base images at every pair of settings (Figure 8)."""
    reference = reference_stats(scenes_64, pipe.tokenizer.image_size, net)
    points = []
    for guidance in guidances:
        for temperature in temperatures:
            gen = pipe.generate(captions, seed=seed, stage="base", guidance=guidance, temperature=temperature)
            points.append({"guidance": guidance, "temperature": temperature,
                           **_judge(gen.images, captions, reference, net)})
    return points


def pareto_front(points: list[dict], *, higher: str = "accuracy", lower: str = "shapes_fid") -> list[int]:
    """Indices of the points no other point beats on both ``higher`` (up) and ``lower`` (down), by ``lower``."""
    front = []
    for i, p in enumerate(points):
        dominated = any(q[higher] >= p[higher] and q[lower] <= p[lower]
                        and (q[higher] > p[higher] or q[lower] < p[lower]) for q in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][lower])


def guidance_schedules(pipe, captions, *, scales=(1.0, 2.0, 4.0, 8.0), seeds=(0, 1), net=None) -> list[dict]:
    """Accuracy and diversity (across ``seeds``) of base images, constant against linear guidance (§2.7)."""
    rows = []
    for schedule in ("constant", "linear"):
        for scale in scales:
            images = [pipe.generate(captions, seed=s, stage="base", guidance=scale, guidance_schedule=schedule).images
                      for s in seeds]
            features = np.stack([embed(net or default_net(), im)[0] for im in images])
            rows.append({"schedule": schedule, "guidance": scale,
                         "accuracy": caption_accuracy(np.concatenate(images), list(captions) * len(seeds))["accuracy"],
                         "diversity": diversity(features)})
    return rows


def diversity_at_equal_accuracy(rows: list[dict]) -> list[dict]:
    """Each schedule's diversity interpolated at accuracies both schedules reach (the §2.7 comparison)."""
    by = {s: sorted((r for r in rows if r["schedule"] == s), key=lambda r: r["accuracy"])
          for s in ("constant", "linear")}
    low = max(min(r["accuracy"] for r in v) for v in by.values())
    high = min(max(r["accuracy"] for r in v) for v in by.values())
    if high < low:
        return []
    out = []
    for accuracy in np.linspace(low, high, 5):
        row = {"accuracy": float(accuracy)}
        for schedule, v in by.items():
            row[schedule] = float(np.interp(accuracy, [r["accuracy"] for r in v], [r["diversity"] for r in v]))
        out.append(row)
    return out


def steps_sweep(pipe, captions, scenes_64, *, steps=(1, 2, 4, 8, 12, 24), seed: int = 0, net=None) -> list[dict]:
    """Accuracy and Shapes-FID of base images by decoding steps, and at one token per step (§2.8, Figure 5)."""
    reference = reference_stats(scenes_64, pipe.tokenizer.image_size, net)
    one_per_token = pipe.tokenizer.grid ** 2
    rows = []
    for n in (*steps, one_per_token):
        gen = pipe.generate(captions, seed=seed, stage="base", steps=int(n))
        rows.append({"steps": int(n), "one_token_per_step": n == one_per_token,
                     **_judge(gen.images, captions, reference, net)})
    return rows


def superres_against_bicubic(pipe, captions, scenes_64, *, seed: int = 0, net=None) -> dict:
    """64 px images from the super-res stage against bicubic upsampling of the same base images (Table 1)."""
    if not pipe.has_superres:
        raise ValueError("pipe: super-res against bicubic needs a pipeline with a trained super-res stage")
    reference = reference_stats(scenes_64, shapes.CANVAS, net)
    gen = pipe.generate(captions, seed=seed)
    factor = gen.images.shape[1] // gen.base_images.shape[1]
    return {"superres": _judge(gen.images, captions, reference, net),
            "bicubic": _judge(bicubic_upsample(gen.base_images, factor), captions, reference, net),
            "base_32px": caption_accuracy(gen.base_images, captions)["accuracy"]}


def decoder_against_tokenizer(finetuned, plain, scenes_64, *, net=None) -> dict:
    """PSNR and Shapes-FID of real scenes' reconstructions by the finetuned decoder and the tokenizer's (§2.5)."""
    reference = shapes_stats(scenes_64, net)
    out = {}
    for name, vqgan in (("finetuned_decoder", finetuned), ("tokenizer_decoder", plain)):
        recon = reconstruct(vqgan, scenes_64)
        out[name] = {"psnr": psnr(recon, scenes_64), "shapes_fid": shapes_fid(recon, reference, net)}
    return out


def count_and_composition(report: dict, stage: str = "base") -> dict:
    """§3.1 from an evaluate report: accuracy by object count, and hold-out pairs beside in-distribution."""
    splits = report["stages"][stage]
    return {"per_count": {split: {n: v["accuracy"] for n, v in f["per_count"].items()} for split, f in splits.items()},
            "in_distribution": splits["train"]["accuracy"] if "train" in splits else None,
            "holdout": splits["holdout"]["accuracy"] if "holdout" in splits else None}
