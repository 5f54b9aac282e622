"""Plain matplotlib figures shared by the notebooks, the demo and the CLI."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from muse_mini.runs.layout import read_metrics


def image_grid(images, titles=None, *, ncols: int = 8, size: float = 1.4, wrap: int = 18,
               suptitle: str | None = None) -> Figure:
    """A grid of uint8 images with optional (wrapped) captions underneath."""
    images = np.asarray(images)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    extra = 0.45 if titles is not None else 0.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + extra)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i], interpolation="nearest")
        if titles is not None:
            ax.set_title("\n".join(textwrap.wrap(str(titles[i]), wrap)), fontsize=6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def side_by_side(columns: dict[str, np.ndarray], titles=None, *, size: float = 1.4) -> Figure:
    """Rows of examples, one column per named method (e.g. base / super-res / bicubic)."""
    names = list(columns)
    n = len(columns[names[0]])
    fig, axes = plt.subplots(n, len(names), figsize=(len(names) * size, n * size), squeeze=False)
    for j, name in enumerate(names):
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(columns[name][i], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0 and titles is not None:
                ax.set_ylabel("\n".join(textwrap.wrap(str(titles[i]), 16)), fontsize=5)
    fig.tight_layout()
    return fig


def token_map(ids_HxW, ax=None, cmap: str = "tab20"):
    """A token map drawn as a coloured grid of code indices (values written in small cells)."""
    ids = np.asarray(ids_HxW)
    ax = ax or plt.subplots(figsize=(3, 3))[1]
    ax.imshow(ids % 20, cmap=cmap, interpolation="nearest")
    if ids.shape[0] <= 16:
        for (r, c), v in np.ndenumerate(ids):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=40 / ids.shape[0])
    ax.set_xticks([]), ax.set_yticks([])
    return ax


def save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def bicubic_upsample(images_NxHxWx3: np.ndarray, factor: int) -> np.ndarray:
    """Pillow's bicubic resize, the classical baseline for super-res (§2.4)."""
    from PIL import Image

    out = [np.asarray(Image.fromarray(im).resize((im.shape[1] * factor, im.shape[0] * factor),
                                                 Image.BICUBIC)) for im in images_NxHxWx3]
    return np.stack(out)


def plot_metrics(
    run_or_metrics: str | os.PathLike | dict[str, np.ndarray],
    keys: Sequence[str] | None = None,
    ax=None,
    *,
    log: bool = False,
    smooth: int = 1,
):
    """Plot metrics against step (all but ``time`` by default). ``smooth`` > 1 adds a
    moving average over that many points; ``log`` uses a log y-axis. Returns ``ax``."""
    m = run_or_metrics if isinstance(run_or_metrics, dict) else read_metrics(run_or_metrics)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    keys = [k for k in (keys or m) if k not in ("step", "time")]
    step = m.get("step", np.array([]))
    for k in keys:
        y = m[k]
        if smooth > 1 and len(y) >= smooth:
            line = ax.plot(step, y, alpha=0.3)[0]
            kernel = np.ones(smooth) / smooth
            smoothed = np.convolve(y, kernel, "valid")
            ax.plot(step[smooth - 1 :], smoothed, color=line.get_color(), label=k)
        else:
            ax.plot(step, y, label=k)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    if keys:
        ax.legend()
    return ax
