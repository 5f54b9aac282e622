"""The figures of ``muse-mini evaluate``: accuracy by kind and by count, Shapes-FID per stage, samples."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from muse_mini.data.captions import KINDS
from muse_mini.viz.figures import image_grid, save

STAGE_LABELS = {"base": "base 32×32", "superres": "super-res 64×64",
                "superres_tokenizer_decoder": "super-res, tokenizer's decoder"}


def _bars(ax, groups: list[str], series: dict[str, list], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        heights = [np.nan if v is None else v for v in values]
        ax.bar(np.arange(len(groups)) + i * width, heights, width, label=label)
    ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2, groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def plot_accuracy(report: dict):
    """Caption accuracy per scene kind (top) and per object count (bottom), one column per split."""
    splits = list(next(iter(report["stages"].values())))
    fig, axes = plt.subplots(2, len(splits), figsize=(5 * len(splits), 6), squeeze=False)
    for col, split in enumerate(splits):
        by_kind = {STAGE_LABELS[s]: [f[split]["per_kind"].get(k, {}).get("accuracy") for k in KINDS]
                   for s, f in report["stages"].items()}
        _bars(axes[0, col], list(KINDS), by_kind, "caption accuracy")
        axes[0, col].set_title(f"{split} prompts", fontsize=9)
        counts = sorted({c for f in report["stages"].values() for c in f[split]["per_count"]}, key=int)
        by_count = {STAGE_LABELS[s]: [f[split]["per_count"].get(c, {}).get("accuracy") for c in counts]
                    for s, f in report["stages"].items()}
        _bars(axes[1, col], [f"{c} object{'s' if c != '1' else ''}" for c in counts], by_count, "caption accuracy")
    for ax in axes.flat:
        ax.set_ylim(0, 1)
    fig.tight_layout()
    return fig


def plot_fid(report: dict):
    """Shapes-FID per stage and split, with the floor two sets of real scenes reach."""
    splits = list(next(iter(report["stages"].values())))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    series = {STAGE_LABELS[s]: [f[sp]["shapes_fid"] for sp in splits] for s, f in report["stages"].items()}
    series["real scenes (floor)"] = [next(iter(report["stages"].values()))[sp]["shapes_fid_real_floor"]
                                     for sp in splits]
    _bars(ax, splits, series, "Shapes-FID (lower is better)")
    fig.tight_layout()
    return fig


def plot_report(report: dict, images: dict, prompts, out_dir: Path) -> list[Path]:
    """Write accuracy.png, shapes_fid.png and samples_<stage>.png under ``out_dir``."""
    written = [save(plot_accuracy(report), out_dir / "accuracy.png"),
               save(plot_fid(report), out_dir / "shapes_fid.png")]
    split = next(iter(prompts.captions))
    for stage, by_split in images.items():
        shown = by_split[split][0][:16]
        written.append(save(image_grid(shown, prompts.captions[split][:16], suptitle=STAGE_LABELS[stage]),
                            out_dir / f"samples_{stage}.png"))
    return written
