"""``muse-mini demo``: the whole toy pipeline, stage by stage, into one directory.

Finished stages are skipped, so a second run only re-renders. Layout (``runs/demo``)::

    shapes/, text/                          sample grid; caption-embedding similarity (§2.1)
    tokenizer-base/, tokenizer-highres/     VQGAN runs + reconstructions.png (§2.2)
    base/, superres/, decoder/              transformer runs (§2.3, §2.4), finetuned decoder (§2.5)
    samples/                                generated grids, accuracy.json
    timings.json                            wall time of each stage
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from muse_mini import viz
from muse_mini.config import RECIPES, get_recipe, seed_overrides
from muse_mini.data.captions import canonical_prompts
from muse_mini.data.evaluator import EVALUATOR_VERSION, caption_accuracy
from muse_mini.data.shapes import downsample, generate
from muse_mini.decoding.spec import DECODING_VERSION
from muse_mini.models.codec import reconstruct
from muse_mini.models.text.cache import EmbeddingCache
from muse_mini.models.text.encoder import load_text_encoder
from muse_mini.pipeline import Pipeline
from muse_mini.runs.layout import DONE_FILE
from muse_mini.runs.load import load_tokenizer
from muse_mini.training.base import train_base
from muse_mini.training.superres import train_superres
from muse_mini.training.tokenizer import train_tokenizer

EVAL_PROMPTS = {"train": 48, "holdout": 16}
SAMPLES_PER_PROMPT = 4


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _timed(timings: dict, name: str, fn):
    start = time.perf_counter()
    result = fn()
    timings[name] = round(time.perf_counter() - start, 1)
    return result


def render_shapes(out: Path, n: int = 24) -> None:
    images, captions, _ = generate(n, seed=0, split="train")
    (out / "shapes").mkdir(parents=True, exist_ok=True)
    (out / "shapes" / "captions.txt").write_text("\n".join(captions) + "\n")
    viz.save(viz.image_grid(images, captions, ncols=8), out / "shapes" / "grid.png")


def render_text(cfg, out: Path, n: int = 12) -> None:
    prompts = canonical_prompts("train", n=n)
    cache = EmbeddingCache(load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length),
                           directory=out / "text-cache")
    emb, mask = cache.encode(prompts)
    pooled = (np.asarray(emb) * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(pooled @ pooled.T, vmin=0, vmax=1, cmap="viridis")
    ax.set_yticks(range(n), prompts, fontsize=6)
    ax.set_xticks([])
    fig.colorbar(im)
    ax.set_title(f"{cfg.text.encoder}: cosine similarity of mean-pooled caption embeddings", fontsize=7)
    fig.tight_layout()
    viz.save(fig, out / "text" / "similarity.png")


def render_reconstructions(cfg, run: Path, stage: str, n: int = 16, *, before: Path | None = None) -> None:
    """Hold-out originals over their reconstructions (``before``: a middle row from that tokenizer) into ``run/reconstructions.png``."""

    images, captions, _ = generate(n, seed=1, split="holdout")
    if stage == "base":
        images = downsample(images, cfg.highres_tokenizer.image_size // cfg.tokenizer.image_size)
    rows = [images, *([reconstruct(load_tokenizer(before), images)] if before else []),
            reconstruct(load_tokenizer(run), images)]
    title = ("hold-out originals, the tokenizer's decoder, the finetuned decoder" if before
             else "hold-out originals (top) and reconstructions")
    viz.save(viz.image_grid(np.concatenate(rows, axis=0), ncols=n, suptitle=title), run / "reconstructions.png")


def evaluate_samples(pipe, out: Path, *, stage: str, label: str, **sampler) -> dict:
    """Caption accuracy of generated images on canonical prompts (the Shapes headline metric)."""

    results = {}
    for split, n in EVAL_PROMPTS.items():
        prompts = canonical_prompts(split, n=n)
        gen = pipe.generate(prompts, num_per_prompt=SAMPLES_PER_PROMPT, seed=0, stage=stage, **sampler)
        results[split] = caption_accuracy(gen.images, gen.prompts)
        if split == "train":
            pick = slice(0, 32 * SAMPLES_PER_PROMPT, SAMPLES_PER_PROMPT)
            viz.save(viz.image_grid(gen.images[pick], gen.prompts[pick], ncols=8),
                     out / "samples" / f"{label}.png")
    return results


def _evaluation_key(pipe, out: Path) -> dict:
    """What the evaluation depends on (runs, samplers, prompts, decoding and evaluator versions), JSON-normalised."""
    return json.loads(json.dumps({
        "decoding": DECODING_VERSION, "evaluator": EVALUATOR_VERSION,
        "runs": {sub: json.loads((out / sub / DONE_FILE).read_text())
                 for sub in ("base", "superres", "decoder") if (out / sub / DONE_FILE).is_file()},
        "sampler": dataclasses.asdict(pipe.cfg.sampler),
        "superres_sampler": dataclasses.asdict(pipe.cfg.superres_sampler),
        "prompts": EVAL_PROMPTS, "samples_per_prompt": SAMPLES_PER_PROMPT,
    }))


def _cached_evaluation(path: Path, key: dict) -> dict | None:
    """The report stored at ``path`` if it was made under ``key``, else None."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("key") == key else None


def format_accuracy(label: str, results: dict) -> str:
    lines = [f"{label}:"]
    for split, r in results.items():
        kinds = ", ".join(f"{k} {v['accuracy']:.0%}" for k, v in r["per_kind"].items() if v["n_images"])
        lines.append(f"  {split:<8} {r['accuracy']:.1%} of {r['n_images']} images "
                     f"({r['n_prompts']} prompts): {kinds}")
    return "\n".join(lines)


def run_demo(recipe: str = "quick", out: str | None = None, *, progress: bool = True,
             evaluate: bool = True, overrides=(), seed: int | None = None) -> dict:
    """Run (or finish, or just re-render) every toy stage, all with ``seed`` if given; returns the timings."""
    overrides = [*(seed_overrides(seed) if seed is not None else ()), *overrides]
    cfg = get_recipe(recipe, overrides)  # checks the name
    out = Path(out or RECIPES[recipe].out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json())
    timings: dict = {}
    start = time.perf_counter()
    finished = {sub for sub in TRAINED_STAGES if (out / sub / DONE_FILE).is_file()}
    stored = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}

    _log(f"recipe {recipe!r} → {out}")
    _timed(timings, "shapes", lambda: render_shapes(out))
    _timed(timings, "text", lambda: render_text(cfg, out))
    train_stages(cfg, out, timings, start, progress=progress)
    keep_trained_times(timings, stored, finished)
    pipe = Pipeline.from_run(out)
    render_samples(pipe, out)
    if evaluate and cfg.data.source != "shapes":
        _log(f"no caption-accuracy evaluation: it checks Shapes captions, and data.source is {cfg.data.source!r}")
    elif evaluate:
        evaluate_pipeline(pipe, out, timings)
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    _log(f"done in {time.perf_counter() - start:.0f}s; outputs under {out}")
    return timings


TRAINED_STAGES = ("tokenizer-base", "base", "tokenizer-highres", "superres", "decoder")  # run subdirectories
TEXT_TO_IMAGE_STAGES = TRAINED_STAGES[:2]  # what text_to_image_total covers


def keep_trained_times(timings: dict, stored: dict, finished: set) -> None:
    """Put back the stored training times of stages finished before this call.

    A resumed run skips them in seconds; without this ``timings.json`` would lose their minutes.
    """
    kept = finished & stored.keys()
    skipped = {sub: timings.get(sub, 0.0) for sub in kept}
    for sub in kept:
        timings[sub] = stored[sub]
    everything_finished = finished >= {sub for sub in TRAINED_STAGES if sub in timings}
    for total, subs in (("text_to_image_total", TEXT_TO_IMAGE_STAGES), ("training_total", TRAINED_STAGES)):
        if everything_finished and total in stored:
            timings[total] = stored[total]
        elif total in timings:
            timings[total] = round(timings[total] + sum(stored[s] - skipped[s] for s in subs if s in kept), 1)


def train_stages(cfg, out: Path, timings: dict, start: float, *, progress: bool) -> None:
    """Every stage in pipeline order, each skipped when finished: text-to-image first, then super-res."""
    def tokenizer(stage, sub):
        _log(f"tokenizer ({stage})")
        _timed(timings, sub, lambda: train_tokenizer(cfg, stage, out / sub, progress=progress))
        render_reconstructions(cfg, out / sub, stage)

    tokenizer("base", "tokenizer-base")
    _log("base transformer")
    _timed(timings, "base", lambda: train_base(cfg, out / "base", tokenizer_run=out / "tokenizer-base",
                                               progress=progress))
    timings["text_to_image_total"] = round(time.perf_counter() - start, 1)
    tokenizer("highres", "tokenizer-highres")
    _log("super-res transformer")
    _timed(timings, "superres", lambda: train_superres(
        cfg, out / "superres", tokenizer_run=out / "tokenizer-base",
        highres_tokenizer_run=out / "tokenizer-highres", progress=progress))
    if cfg.decoder.enabled:
        _log("finetuned high-res decoder (§2.5)")
        _timed(timings, "decoder", lambda: train_tokenizer(
            cfg, "decoder", out / "decoder", finetune_from=out / "tokenizer-highres", progress=progress))
        render_reconstructions(cfg, out / "decoder", "decoder", before=out / "tokenizer-highres")
    timings["training_total"] = round(time.perf_counter() - start, 1)


SHOWCASE_PROMPTS = ("a large red circle", "two blue squares", "a green triangle in the top left",
                    "a purple diamond left of an orange circle", "three yellow triangles",
                    "a small orange square", "a blue circle above a red triangle", "a purple square in the center")


def render_samples(pipe, out: Path) -> None:
    """Base, super-res and bicubic outputs side by side (§2.4), into ``samples/superres_vs_bicubic.png``."""
    gen = pipe.generate(list(SHOWCASE_PROMPTS), seed=0)
    viz.save(viz.side_by_side({
        "base 32×32": gen.base_images,
        "super-res 64×64": gen.images,
        "bicubic 64×64": viz.bicubic_upsample(gen.base_images, 2),
    }, titles=list(SHOWCASE_PROMPTS)), out / "samples" / "superres_vs_bicubic.png")


def evaluate_pipeline(pipe, out: Path, timings: dict) -> dict:
    """Caption accuracy of base (with and without guidance) and super-res; reused while its key holds."""
    key, path = _evaluation_key(pipe, out), out / "samples" / "accuracy.json"
    report = _cached_evaluation(path, key)
    if report is not None:
        _log("evaluation unchanged since the last run (samples/accuracy.json)")
        for label, result in report["results"].items():
            print(format_accuracy(label, result), flush=True)
        return report
    report = {"key": key, "results": {}}
    for label, stage, sampler in (
        ("base", "base", {}),
        ("base_no_guidance", "base", {"guidance": 0.0}),
        ("superres", "superres", {}),
    ):
        _log(f"evaluating {label}")
        result = _timed(timings, f"eval_{label}", lambda: evaluate_samples(
            pipe, out, stage=stage, label=label, **sampler))
        report["results"][label] = result
        print(format_accuracy(label, result), flush=True)
    path.write_text(json.dumps(report, indent=2))
    return report
