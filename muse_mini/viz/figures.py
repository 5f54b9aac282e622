"""Plain matplotlib figures shared by the notebooks, the demo and the CLI."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from muse_mini.runs.layout import read_metrics


MIN_FONT = 8  # pt: no text in these figures is smaller; a figure grows instead
CHAR_IN = 0.6 * MIN_FONT / 72  # the width of an average character at MIN_FONT, in inches
LINE_IN = 1.25 * MIN_FONT / 72
PAGE_WIDTH = 10.0  # inches: about what a notebook page shows unscaled at matplotlib's 100 dpi
MASK_COLOUR = (255, 79, 163)  # the MaskPainter's pink: no Shapes colour, visible on white


def _wrapped(text, width_in: float) -> str:
    return "\n".join(textwrap.wrap(str(text), max(4, int(width_in / CHAR_IN)))) or str(text)


def image_grid(images, titles=None, *, ncols: int = 8, size: float = 1.4, wrap: int | None = None,
               suptitle: str | None = None) -> Figure:
    """A grid of uint8 images with optional captions, wrapped to the column width (``wrap`` characters)."""
    images = np.asarray(images)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    wrap_in = size - 0.1 if wrap is None else wrap * CHAR_IN
    shown = [_wrapped(t, wrap_in) for t in titles] if titles is not None else []
    lines = max((t.count("\n") + 1 for t in shown), default=0)
    extra = lines * LINE_IN + 0.15 if titles is not None else 0.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + extra)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i], interpolation="nearest")
        if titles is not None:
            ax.set_title(shown[i], fontsize=MIN_FONT)
    if suptitle:
        fig.suptitle(suptitle, fontsize=MIN_FONT + 1)
    fig.tight_layout()
    return fig


def side_by_side(columns: dict[str, np.ndarray], titles=None, *, size: float = 1.4) -> Figure:
    """Rows of examples, one column per named method (e.g. base / super-res / bicubic); ``titles`` label the rows."""
    names = list(columns)
    n = len(columns[names[0]])
    label_in = 1.2 if titles is not None else 0.0  # room for the row labels, left of the first column
    heads = [_wrapped(name, size - 0.1) for name in names]
    top_in = max(h.count("\n") + 1 for h in heads) * LINE_IN + 0.1
    fig, axes = plt.subplots(n, len(names), figsize=(len(names) * size + label_in, n * size + top_in),
                             squeeze=False)
    for j, name in enumerate(names):
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(columns[name][i], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(heads[j], fontsize=MIN_FONT)
            if j == 0 and titles is not None:
                ax.set_ylabel(_wrapped(titles[i], label_in - 0.1), fontsize=MIN_FONT)
    fig.tight_layout()
    return fig


def _number_cell_in(ids) -> float:
    """The side of a cell that holds the widest id at MIN_FONT (a digit is 0.64 em), with a margin."""
    digits = max(len(str(int(v))) for v in np.ravel(ids)) if np.size(ids) else 1
    return digits * 0.64 * MIN_FONT / 72 + 0.06


def _grow_to_fit(ax, width_in: float, height_in: float, max_width: float | None) -> bool:
    """Enlarge ``ax``'s figure (everything in it, proportionally) until ``ax`` is at least that big;
    False, leaving it as it is, when that would make the figure wider than ``max_width`` inches."""
    fig = ax.figure
    box = ax.get_position()
    fig_w, fig_h = fig.get_size_inches()
    scale = max(width_in / (box.width * fig_w), height_in / (box.height * fig_h))
    if scale <= 1:
        return True
    if max_width is not None and fig_w * scale > max_width:
        return False
    fig.set_size_inches(fig_w * scale, fig_h * scale)
    return True


def token_map(ids_HxW, ax=None, cmap: str = "tab20", *, numbers: bool | None = None):
    """A token map drawn as a coloured grid (colour: id mod 20), each code index written at ``MIN_FONT``.

    The figure grows until the numbers fit. ``numbers=None`` writes them only if the figure stays within
    ``PAGE_WIDTH`` (a wider one is shrunk on the page, and its text with it); True always, False never.
    """
    ids = np.asarray(ids_HxW)
    if ids.ndim != 2:
        raise ValueError(f"ids_HxW: expected a 2-D map of token ids, got shape {ids.shape}")
    rows, cols = ids.shape
    cell_in = _number_cell_in(ids)
    if ax is None:
        fits = numbers is True or (numbers is None and cell_in * cols * 1.2 <= PAGE_WIDTH)
        side = max(3.0, cell_in * max(rows, cols) * 1.2) if fits else 3.0  # 1.2: the figure's margins
        ax = plt.subplots(figsize=(side * cols / max(rows, cols), side * rows / max(rows, cols)))[1]
        numbers = fits
    elif numbers is not False:
        numbers = _grow_to_fit(ax, cell_in * cols, cell_in * rows, None if numbers else PAGE_WIDTH)
    ax.imshow(ids % 20, cmap=cmap, interpolation="nearest")
    if numbers:
        for (r, c), v in np.ndenumerate(ids):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=MIN_FONT)
    ax.set_xticks([]), ax.set_yticks([])
    return ax


def mask_overlay(image_HxWx3, mask_HxW, colour=MASK_COLOUR) -> np.ndarray:
    """``image`` with the ``mask``ed pixels hatched in ``colour`` (diagonal stripes over the image
    blended with it), so a mask shows on white and on every Shapes colour."""
    image, mask = np.asarray(image_HxWx3), np.asarray(mask_HxW, bool)
    if image.ndim != 3 or image.shape[-1] != 3 or mask.shape != image.shape[:2]:
        raise ValueError(f"mask_HxW: expected a mask of the image's (H, W) = {image.shape[:2]}, got {mask.shape}")
    rows, cols = np.indices(mask.shape)
    stripe = ((rows + cols) // 2) % 2 == 0
    tint = (0.4 * image + 0.6 * np.asarray(colour)).astype(np.uint8)
    painted = np.where(stripe[..., None], np.asarray(colour, np.uint8), tint)
    return np.where(mask[..., None], painted, image).astype(np.uint8)


#: (name, colour) of each state a token can be in after a decoding step of inpainting (§3.3.1).
TOKEN_STATES = (
    ("kept (input)", "#d0d0d0"),
    ("generated earlier", "#4c72b0"),
    ("fixed at this step", "#ff9f1c"),
    ("masked: resampled next", "#%02x%02x%02x" % MASK_COLOUR),
)


def token_states(traj, index: int = 0) -> np.ndarray:
    """Each token's state after every step (``TxN``, indices into :data:`TOKEN_STATES`) of a
    :class:`~muse_mini.decoding.sampler.Trajectory`: kept from the input, fixed earlier, fixed now, masked."""
    mask_TxN = np.asarray(traj.mask_BxTxN[index])
    fixed_step_N = np.asarray(traj.fixed_step_BxN[index])
    step_Tx1 = np.arange(len(mask_TxN))[:, None]
    states = np.where(fixed_step_N < step_Tx1, 1, 2)
    states = np.where(mask_TxN, 3, states)
    return np.where(fixed_step_N < 0, 0, states)


def inpaint_steps(traj, steps=None, *, index: int = 0, frames=None, size: float = 1.5) -> Figure:
    """The token-level state of an inpainting after the 0-based ``steps`` (default: six, first to last):
    which tokens the input fixed, which the sampler fixed and when, which it resamples next;
    ``frames`` (one decoded image per step) adds them above."""
    states_TxN = token_states(traj, index)
    T, N = states_TxN.shape
    grid = int(round(np.sqrt(N)))
    steps = np.unique(np.linspace(0, T - 1, min(6, T)).round().astype(int)) if steps is None else list(steps)
    if not len(steps) or any(not 0 <= int(t) < T for t in steps):
        raise ValueError(f"steps: expected steps in [0, {T}), got {list(steps)}")
    nrows = 1 if frames is None else 2
    ncol = 4 if len(steps) >= 4 else 2
    legend_in = (len(TOKEN_STATES) // ncol) * 0.22 + 0.1
    fig, axes = plt.subplots(nrows, len(steps), figsize=(len(steps) * size, nrows * size + 0.35 + legend_in),
                             squeeze=False)
    cmap = ListedColormap([colour for _, colour in TOKEN_STATES])
    for j, t in enumerate(steps):
        ax = axes[-1, j]
        ax.imshow(states_TxN[t].reshape(grid, grid), cmap=cmap, vmin=0, vmax=len(TOKEN_STATES) - 1,
                  interpolation="nearest")
        if frames is not None:
            axes[0, j].imshow(np.asarray(frames)[t], interpolation="nearest")
        axes[0, j].set_title(f"step {t + 1}/{T}: {int((states_TxN[t] == 3).sum())} masked", fontsize=MIN_FONT)
        for a in axes[:, j]:
            a.set_xticks([]), a.set_yticks([])
    handles = [Patch(facecolor=colour, edgecolor="k", label=name) for name, colour in TOKEN_STATES]
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=MIN_FONT, frameon=False)
    fig.tight_layout(rect=(0, legend_in / fig.get_size_inches()[1], 1, 1))
    return fig


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
