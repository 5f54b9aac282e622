"""``muse-mini evaluate``: one report of a trained pipeline, per stage, split, scene kind and count.

Prompts are the canonical captions of unseen Shapes scenes (:data:`EVAL_SEED`), as FID uses a
validation set's captions (Tables 1–2). Per stage and split: caption accuracy by kind and by
object count (§3.1), Shapes-FID beside the floor real scenes reach, and diversity across seeds
(§2.7). Samples are stored and reused while runs, samplers and prompts are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from muse_mini.data import shapes
from muse_mini.data.captions import parse_caption
from muse_mini.data.evaluator import caption_accuracy
from muse_mini.decoding.spec import DECODING_VERSION
from muse_mini.evaluation.features import embed
from muse_mini.evaluation.fid import default_net, reference_stats
from muse_mini.evaluation.frechet import feature_stats, frechet_distance
from muse_mini.evaluation.plots import plot_report
from muse_mini.models.codec import decode_tokens
from muse_mini.pipeline import Pipeline
from muse_mini.runs.layout import DONE_FILE
from muse_mini.runs.load import load_tokenizer, pipeline_runs
from muse_mini.runs.pretrained import load_stage, names_pretrained, read_index, resolve_pretrained

#: Shapes seed of the evaluation scenes (models train on 0, editing cases use 1000).
EVAL_SEED = 2000
REFERENCE_SCENES = 1024
SPLITS = ("train", "holdout")
STAGES = ("base", "superres", "superres_tokenizer_decoder")


@dataclasses.dataclass(frozen=True)
class Prompts:
    """The captions to generate from, per split, and the real scenes they came from (None for a prompt file)."""

    captions: dict[str, list[str]]
    scenes: dict[str, np.ndarray | None]


def evaluation_prompts(samples: int, prompts_file=None) -> Prompts:
    """``samples`` unseen scenes per split, or the canonical captions of ``prompts_file`` (one per line)."""
    if prompts_file is None:
        captions, scenes = {}, {}
        for split in SPLITS:
            images, texts, _ = shapes.generate(samples, seed=EVAL_SEED, split=split)
            captions[split], scenes[split] = texts, images
        return Prompts(captions, scenes)
    path = Path(prompts_file)
    if not path.is_file():
        raise FileNotFoundError(f"--prompts: no such file {path}")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"--prompts: {path} holds no prompt")
    by_split: dict[str, list[str]] = {split: [] for split in SPLITS}
    for number, line in enumerate(lines, 1):
        try:
            req = parse_caption(line)
        except ValueError as err:
            raise ValueError(f"--prompts: line {number} of {path}: {err}") from None
        by_split["holdout" if req.is_holdout else "train"].append(line)
    return Prompts({k: v for k, v in by_split.items() if v}, {k: None for k, v in by_split.items() if v})


def _real_stats(split: str, n: int, seed: int, side: int, net):
    """Feature statistics of ``n`` real scenes of ``split`` from ``seed``, judged at ``side`` px."""
    images, _, _ = shapes.generate(n, seed=seed, split=split)
    return reference_stats(images, side, net)


def object_count(caption: str) -> int:
    """How many objects a canonical caption asks for (single and placed 1, relation 2, count n)."""
    req = parse_caption(caption)
    return 2 if req.kind == "relation" else int(req.count)


def accuracy_by_count(images, captions) -> dict:
    out = {}
    counts = np.array([object_count(c) for c in captions])
    for n in sorted(set(counts.tolist())):
        pick = np.flatnonzero(counts == n)
        result = caption_accuracy(images[pick], [captions[i] for i in pick])
        out[str(n)] = {"accuracy": result["accuracy"], "n_images": result["n_images"]}
    return out


def diversity(features_SxPxD: np.ndarray) -> float | None:
    """Mean feature distance between samples of one prompt (S seeds × P prompts × D); None with one seed."""
    seeds = len(features_SxPxD)
    if seeds < 2:
        return None
    gaps = [np.linalg.norm(features_SxPxD[i] - features_SxPxD[j], axis=-1).mean()
            for i in range(seeds) for j in range(i + 1, seeds)]
    return float(np.mean(gaps))


def _run_key(weights: dict, pipe, captions: list[str], seed: int, overrides: dict) -> str:
    """A digest of what a stored sample depends on: the weights (:func:`_weights_identity`), the samplers,
    the prompts, the seed."""
    key = {"decoding": DECODING_VERSION, "runs": weights, "sampler": dataclasses.asdict(pipe.cfg.sampler),
           "superres_sampler": dataclasses.asdict(pipe.cfg.superres_sampler), "overrides": overrides,
           "captions": captions, "seed": seed}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def generate_stages(pipe, plain_decoder, captions: list[str], seed: int, overrides: dict) -> dict[str, np.ndarray]:
    """One seed's images of ``captions`` at every stage the pipeline has."""
    gen = pipe.generate(captions, seed=seed, **overrides)
    images = {"base": gen.base_images}
    if gen.superres_trajectory is not None:
        images["superres"] = gen.images
        if plain_decoder is not None:  # the same super-res tokens through the tokenizer's own decoder
            images["superres_tokenizer_decoder"] = decode_tokens(
                plain_decoder, np.asarray(gen.superres_trajectory.tokens_BxN))
    return images


def cached_samples(path: Path, key: str, make) -> dict[str, np.ndarray]:
    """The images stored at ``path`` when they were made under ``key``; else ``make()``, stored."""
    if path.is_file():
        with np.load(path) as stored:
            if str(stored["key"]) == key:
                return {name: stored[name] for name in stored.files if name != "key"}
    images = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, key=np.asarray(key), **images)
    tmp.replace(path)
    return images


def _weights_identity(source: Path) -> dict:
    """What identifies the weights: each finished run's DONE.json, or a pretrained folder's stage digests."""
    if not names_pretrained(source):
        return {p.parent.name: p.read_text() for p in sorted(source.glob(f"*/{DONE_FILE}"))}
    return {name: stage["sha256"] for name, stage in read_index(resolve_pretrained(source))["stages"].items()}


def plain_highres_decoder(source: Path, pipe):
    """The high-res tokenizer the finetuned decoder (§2.5) replaced, when the pipeline has one; else None."""
    if not pipe.has_superres:
        return None
    if not names_pretrained(source):
        runs = pipeline_runs(source)
        return load_tokenizer(runs["highres_tokenizer"]) if "decoder" in runs else None
    folder = resolve_pretrained(source)
    return load_stage(folder, "highres_tokenizer")[0] if "decoder" in read_index(folder)["stages"] else None


def _stage_figures(images_SxN, captions, split, net) -> dict:
    """Accuracy, Shapes-FID and diversity of one stage's images over every seed, for one split."""
    seeds, n = images_SxN.shape[:2]
    flat = images_SxN.reshape(seeds * n, *images_SxN.shape[2:])
    flat_captions = captions * seeds
    side = flat.shape[1]
    accuracy = caption_accuracy(flat, flat_captions)
    features = embed(net, flat)[0]
    fid = floor = None
    if len(flat) >= 2:  # a Gaussian needs two samples
        reference = _real_stats(split, REFERENCE_SCENES, EVAL_SEED, side, net)
        fid = frechet_distance(feature_stats(features), reference)
        # real scenes of another seed: the Shapes-FID that sampling alone gives at this set size
        floor = frechet_distance(_real_stats(split, len(flat), EVAL_SEED + 1, side, net), reference)
    figures = {
        "accuracy": accuracy["accuracy"], "n_images": accuracy["n_images"], "n_prompts": accuracy["n_prompts"],
        "per_kind": {k: v for k, v in accuracy["per_kind"].items() if v["n_images"]},
        "per_count": accuracy_by_count(flat, flat_captions),
        "shapes_fid": fid,
        "shapes_fid_real_floor": floor,
        "diversity": diversity(features.reshape(seeds, n, -1)),
    }
    return figures


def evaluate_run(run_dir, out_dir, *, samples: int = 128, seeds=(0, 1), prompts_file=None, progress: bool = True,
                 pipe=None, **sampler_overrides) -> dict:
    """Generate, judge and write ``OUT/report.json`` with its plots; returns the report. ``run_dir``: a run
    directory or a pretrained pipeline (a shipped name, an export folder)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    pipe = pipe or Pipeline.load(run_dir)
    prompts = evaluation_prompts(samples, prompts_file)
    plain = plain_highres_decoder(run_dir, pipe)
    net = default_net()
    report = {"run": str(run_dir), "seeds": list(seeds), "samples_per_split": {k: len(v) for k, v in
                                                                              prompts.captions.items()},
              "sampler_overrides": sampler_overrides, "stages": {}}
    jobs = [(split, seed) for split in prompts.captions for seed in seeds]
    weights = _weights_identity(run_dir)  # once: a Hub id is resolved (and its index read) here, not per job
    images: dict[str, dict[str, list]] = {}
    for split, seed in tqdm(jobs, desc="evaluate: generate", disable=not progress):
        captions = prompts.captions[split]
        key = _run_key(weights, pipe, captions, seed, sampler_overrides)
        stored = cached_samples(out_dir / "samples" / f"{split}_seed{seed}.npz", key,
                                lambda: generate_stages(pipe, plain, captions, seed, sampler_overrides))
        for stage, array in stored.items():
            images.setdefault(stage, {}).setdefault(split, []).append(array)
    for stage in tqdm([s for s in STAGES if s in images], desc="evaluate: judge", disable=not progress):
        report["stages"][stage] = {
            split: _stage_figures(np.stack(arrays), prompts.captions[split], split, net)
            for split, arrays in images[stage].items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    plot_report(report, images, prompts, out_dir)
    return report
