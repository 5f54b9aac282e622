"""Steps 3 and 4 of :mod:`muse_mini.data.evaluator`: fit a shape to one object's soft ink
(analysis by synthesis, soft IoU), then catch the notches and holes IoU cannot tell from blur.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from muse_mini.data.captions import SHAPES
from muse_mini.data.shapes import CANVAS, shape_mask

MIN_SHAPE_IOU = 0.5  # soft IoU below which a blob matches no shape
MAX_CONCAVITY = 0.05  # ink missing from the spans of SPAN_DIRECTIONS' lines, as a fraction of the ink (see flat_fill)
# Lines along which a convex shape's ink is one run.
SPAN_DIRECTIONS = ("row", "column", "diagonal", "anti-diagonal")
MAX_HOLE_64 = 2.0  # enclosed missing ink, px at 64×64 (a 32×32 pixel counts 4)
BLUR_SIGMAS = (0.0, 0.7)  # template blurs tried, px at the evaluated resolution


@functools.lru_cache(maxsize=None)
def _shape_stats(shape: str, size: int) -> tuple[int, float, float]:
    """Pixel area and mass centroid (relative to the box corner) of a drawn shape."""
    m = shape_mask(shape, size)
    ys, xs = np.nonzero(m)
    return int(m.sum()), float(xs.mean() + 0.5), float(ys.mean() + 0.5)


_PAD = 2  # template border (pixels at the evaluated resolution) for blur spill


@functools.lru_cache(maxsize=None)
def _soft_template(shape: str, size: int, phase_x: int, phase_y: int, factor: int,
                   sigma: float) -> np.ndarray:
    # ``shape`` drawn at 64×64 with its box corner ``phase`` px into a ``factor``-block,
    # block-averaged, optionally blurred, with a ``_PAD`` border.
    h64 = -(-(phase_y + size) // factor) * factor
    w64 = -(-(phase_x + size) // factor) * factor
    canvas = np.zeros((h64, w64))
    canvas[phase_y:phase_y + size, phase_x:phase_x + size] = shape_mask(shape, size)
    t = canvas.reshape(h64 // factor, factor, w64 // factor, factor).mean(axis=(1, 3))
    t = np.pad(t, _PAD)
    if sigma:
        t = ndimage.gaussian_filter(t, sigma, mode="constant")
    t.flags.writeable = False
    return t


def fit_shape(alpha_hxw: np.ndarray, origin: tuple[int, int], factor: int):
    """``(shape, iou, cx, cy, size)`` (64×64 coordinates) best explaining one object's ink
    ``alpha_hxw``, whose top-left pixel is ``origin = (row, col)`` of the image.

    Size comes from the ink mass (blur and block averaging conserve it), position from
    the mass centroid; each shape is drawn as the renderer would, optionally blurred,
    and scored by soft IoU ``sum(min) / sum(max)``.
    """
    h, w = alpha_hxw.shape
    r0, c0 = origin
    mass = alpha_hxw.sum()
    ys, xs = np.mgrid[0:h, 0:w]
    mx = (((xs + 0.5) * alpha_hxw).sum() / mass + c0) * factor  # 64×64 coords
    my = (((ys + 0.5) * alpha_hxw).sum() / mass + r0) * factor
    area64 = mass * factor ** 2
    candidates, stack = [], []
    for shape in SHAPES:
        # the two sizes whose drawn area brackets the measured ink mass
        side = np.sqrt(area64 / (_shape_stats(shape, 32)[0] / 32 ** 2))
        for size in {int(np.floor(side)), int(np.ceil(side))}:
            if not 2 <= size <= CANVAS:
                continue
            _, ox, oy = _shape_stats(shape, size)
            x0, y0 = int(round(mx - ox)), int(round(my - oy))  # box corner, 64×64 coords
            for sigma in BLUR_SIGMAS:
                candidates.append((shape, size, x0, y0))
                stack.append(_placed_template(shape, size, x0, y0, sigma, origin, (h, w), factor))
    if not candidates:
        return "unknown", 0.0, mx, my, float(np.sqrt(area64))
    t_Kxhxw = np.stack(stack)
    iou_K = (np.minimum(alpha_hxw, t_Kxhxw).sum(axis=(1, 2))
             / np.maximum(alpha_hxw, t_Kxhxw).sum(axis=(1, 2)))
    k = int(np.argmax(iou_K))
    shape, size, x0, y0 = candidates[k]
    named = shape if iou_K[k] >= MIN_SHAPE_IOU else "unknown"
    return named, float(iou_K[k]), x0 + size / 2, y0 + size / 2, float(size)


def _placed_template(shape, size, x0, y0, sigma, origin, window, factor) -> np.ndarray:
    # _soft_template with its box corner at (x0, y0) (64×64), pasted into the window at ``origin``.
    (r0, c0), (h, w) = origin, window
    ty, tx = y0 // factor - _PAD - r0, x0 // factor - _PAD - c0  # in the window
    t = _soft_template(shape, size, x0 % factor, y0 % factor, factor, sigma)
    canvas = np.zeros((h, w))
    a0, b0 = max(ty, 0), max(tx, 0)
    a1, b1 = min(ty + t.shape[0], h), min(tx + t.shape[1], w)
    if a1 > a0 and b1 > b0:
        canvas[a0:a1, b0:b1] = t[a0 - ty:a1 - ty, b0 - tx:b1 - tx]
    return canvas


def _spans(ink: np.ndarray, line: np.ndarray, along: np.ndarray) -> np.ndarray:
    # Pixels between the first and last ink pixel of their line (same ``line`` index, ordered by ``along``).
    n = int(line.max()) + 1
    first, last = np.full(n, int(along.max()) + 1), np.full(n, -1)
    np.minimum.at(first, line[ink], along[ink])
    np.maximum.at(last, line[ink], along[ink])
    return (along >= first[line]) & (along <= last[line])


def _lines(shape: tuple[int, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    # Each direction's (line, along) indices, both from 0, for _spans.
    r, c = np.indices(shape)
    return {"row": (r, c), "column": (c, r), "diagonal": (r - c + shape[1] - 1, r), "anti-diagonal": (r + c, r)}


def flat_fill(alpha_hxw: np.ndarray, min_alpha: float) -> tuple[float, float]:
    """``(concavity, holes)`` of one object's ink: Shapes are convex and flat-filled, so each
    line of ink in every ``SPAN_DIRECTIONS`` is one run, however blurred. ``concavity`` is the
    ink missing from those spans as a fraction of the ink; ``holes`` the part enclosed by ink
    (pixels of ``alpha_hxw``). A missing pixel counts by how far it falls below ``min_alpha``.
    """
    ink = alpha_hxw >= min_alpha
    lines = _lines(ink.shape)
    spans = np.logical_or.reduce([_spans(ink, *lines[d]) for d in SPAN_DIRECTIONS])
    missing = np.where(~ink, np.clip(1.0 - alpha_hxw / min_alpha, 0.0, 1.0), 0.0)
    holes = float(missing[ndimage.binary_fill_holes(ink) & ~ink].sum())
    return float(missing[spans].sum() / max(ink.sum(), 1)), holes
