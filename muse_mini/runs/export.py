"""``muse-mini export``: a trained run as a pretrained folder (:mod:`muse_mini.runs.pretrained`) with a model card.

Only the models leave the run (no optimiser, checkpoints or data), as safetensors a Hugging Face user can read.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
from pathlib import Path

from safetensors.numpy import save_file

from muse_mini.runs.layout import read_run_config
from muse_mini.runs.load import load_base, load_superres, load_tokenizer, pipeline_runs, read_stage
from muse_mini.runs.pretrained import FORMAT, INDEX_FILE, STAGE_CONFIG, WEIGHTS_FILE, file_sha256
from muse_mini.runs.weights import model_tensors

CLASSES = {"tokenizer": "VQGAN", "highres_tokenizer": "VQGAN", "decoder": "VQGAN",
           "base": "BaseTransformer", "superres": "SuperResTransformer"}
SAMPLE_GRID = "samples/superres.png", "samples/base.png"  # the demo's grids, the first found goes on the card


def _stage_model(stage: str, run: Path):
    if CLASSES[stage] == "VQGAN":
        return load_tokenizer(run, with_config=True)
    return (load_base if stage == "base" else load_superres)(run)


def _write_stage(out: Path, stage: str, run: Path) -> dict:
    model, cfg = _stage_model(stage, run)
    (out / stage).mkdir(parents=True, exist_ok=True)
    (out / stage / STAGE_CONFIG).write_text(json.dumps({"class": CLASSES[stage], "config": dataclasses.asdict(cfg)}, indent=2))
    tensors = model_tensors(model)
    save_file(tensors, out / stage / WEIGHTS_FILE, metadata={"format": "np", "library": "muse_mini"})
    (out / stage / WEIGHTS_FILE).chmod(0o644)
    return {"path": stage, "class": CLASSES[stage], "sha256": file_sha256(out / stage / WEIGHTS_FILE),
            "parameters": int(sum(t.size for t in tensors.values())),
            "trained_steps": read_run_config(run).get("train_config", {}).get("steps")}


def _evaluation(run_dir: Path, report: Path | None) -> dict:
    """Caption accuracy from the demo's ``samples/accuracy.json``; accuracy and Shapes-FID from an evaluate report."""
    figures: dict = {}
    demo = run_dir / "samples" / "accuracy.json"
    if demo.is_file():
        stored = json.loads(demo.read_text())
        figures["demo"] = {"evaluator_version": stored["key"]["evaluator"], "sampler": stored["key"]["sampler"],
                           "images_per_prompt": stored["key"]["samples_per_prompt"],
                           "accuracy": {f"{stage}/{split}": r["accuracy"] for stage, splits in stored["results"].items()
                                        for split, r in splits.items()}}
    if report is not None:
        stored = json.loads(Path(report).read_text())
        figures["evaluate"] = {f"{stage}/{split}": {"accuracy": f["accuracy"], "shapes_fid": f["shapes_fid"],
                                                    "n_images": f["n_images"]}
                               for stage, splits in stored["stages"].items() for split, f in splits.items()}
    return figures


def export_pipeline(run_dir, out, *, report=None, provenance: dict | None = None) -> Path:
    """Write every finished stage of ``run_dir`` to ``out`` (which must not hold files) and its model card."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out: {out} is not empty; export writes into a new folder")
    if report is not None and not Path(report).is_file():
        raise FileNotFoundError(f"--report: no such file {report}")
    runs = pipeline_runs(run_dir)
    cfg, _ = read_stage(runs["base"])
    out.mkdir(parents=True, exist_ok=True)
    stages = {stage: _write_stage(out, stage, run) for stage, run in runs.items()}
    timings = run_dir / "timings.json"
    index = {
        "format": FORMAT, "version": 1,
        "text_encoder": {"name": cfg.text.encoder, "max_length": cfg.text.max_length},
        "stages": stages,
        "evaluation": _evaluation(run_dir, report),
        "training_minutes": (round(json.loads(timings.read_text()).get("training_total", 0) / 60, 1)
                             if timings.is_file() else None),
        "seeds": {"data": cfg.data.seed, "training": cfg.base_train.seed},
        "provenance": {"exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                       **(provenance or {})},
    }
    for grid in SAMPLE_GRID:
        if (run_dir / grid).is_file():
            shutil.copyfile(run_dir / grid, out / "samples.png")
            index["sample_grid"] = "samples.png"
            break
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2))
    (out / "README.md").write_text(model_card(index))
    return out


def _figure_rows(evaluation: dict) -> list[str]:
    rows = []
    demo = evaluation.get("demo")
    if demo:
        for name, value in demo["accuracy"].items():
            rows.append(f"| caption accuracy, {name} (demo prompts, {demo['images_per_prompt']} images each) "
                        f"| {value:.1%} | v{demo['evaluator_version']} |")
    for name, f in evaluation.get("evaluate", {}).items():
        fid = "n/a" if f["shapes_fid"] is None else f"{f['shapes_fid']:.2f}"
        rows.append(f"| caption accuracy / Shapes-FID, {name} ({f['n_images']} images) "
                    f"| {f['accuracy']:.1%} / {fid} | `muse-mini evaluate` |")
    return rows or ["| (no evaluation stored with the run) | | |"]


def model_card(index: dict) -> str:
    """The README.md of a pretrained folder: what it is, how it was made, how well it does, the licence."""
    prov = index["provenance"]
    stages = "\n".join(f"| `{name}/` | {s['class']} | {s['parameters']:,} | {s['trained_steps']} |"
                       for name, s in index["stages"].items())
    grid = f"\n![samples]({index['sample_grid']})\n" if "sample_grid" in index else ""
    return f"""---
license: apache-2.0
library_name: muse_mini
tags: [text-to-image, masked-generative-transformer, muse, shapes]
---

# muse_mini Shapes pipeline

A Muse cascade (Chang et al., 2023) trained on the Shapes toy world with muse_mini: base VQGAN and
transformer (32 px), high-res VQGAN and super-res transformer (64 px){', finetuned decoder' if 'decoder' in index['stages'] else ''}.
Text encoder: `{index['text_encoder']['name']}` (frozen, not stored here).
{grid}
```python
from muse_mini.pipeline import Pipeline
pipe = Pipeline.from_pretrained("{prov.get('name', 'FOLDER')}")
images = pipe.generate(["a red circle above a blue square"], seed=0).images
```

## How it was made

| | |
|---|---|
| recipe | {prov.get('recipe', 'not recorded')} |
| seeds | data {index['seeds']['data']}, training {index['seeds']['training']} |
| commit | {prov.get('commit', 'not recorded')} |
| training time | {index['training_minutes']} min |
| machine | {prov.get('machine', 'not recorded')} |
| command | {prov.get('command', 'not recorded')} |

| stage | class | parameters | steps |
|---|---|---|---|
{stages}

## How well it does

Caption accuracy: the share of generated images whose scene the Shapes evaluator reads back as the prompt.

| figure | value | judged by |
|---|---|---|
{chr(10).join(_figure_rows(index['evaluation']))}

{('## Notes' + chr(10) + chr(10) + prov['notes'] + chr(10) + chr(10)) if prov.get('notes') else ''}## Licence

Apache-2.0, as muse_mini. Trained only on procedurally generated Shapes scenes.
"""
