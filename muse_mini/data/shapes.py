"""The Shapes world: muse_mini's toy text-to-image dataset (objects, pixels, sampling).

Muse's headline claims are about cardinality and composition (§3.1, Fig. 6). Every
Shapes scene is drawn by this program, so its caption is true by construction and
:mod:`muse_mini.data.evaluator` can check any generated image against it. The caption
grammar is :mod:`muse_mini.data.captions`; the contract is ``docs/shapes.md``. Free
choices: boxes are integer-aligned (rendering copies a cached mask), ``MIN_GAP`` apart,
and kept clear of region and relation boundaries so a caption stays true after blur or
downsampling; sample ``index`` has kind ``kinds[index % len(kinds)]``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from muse_mini.data.captions import (
    ALL_PAIRS, COLOURS, HOLDOUT_PAIRS, KINDS, NUMBER_WORDS, REGIONS, RELATIONS, SHAPES, SIZES, TRAIN_PAIRS,
    Requirements, canonical_caption, check_int, check_kinds, check_split, paraphrase, pick,
)

CANVAS = 64  # high-res side (spec: "Images")
LOW_RES = 32  # base-model side: 2×2 block average of the canvas
BACKGROUND = (255, 255, 255)

RELATION_MIN_DIFF = 12.0  # spec: the stated axis differs by >= 12 px at 64×64
MIN_GAP = 4  # px between bounding boxes at 64×64 (spec minimum is 2)
EDGE_MARGIN = 1  # px of background kept at the canvas border
# Generator-only safety margins (px at 64×64); the evaluator applies the
# spec's rules, so these keep rendered scenes away from the decision boundaries.
_QUARTER_MARGIN = 4.0  # centre at least this far from the canvas midlines
_CENTER_MARGIN = 3.0  # "center" objects this far inside the middle third
_NOT_CENTER_MARGIN = 2.0  # quarter objects this far outside the middle third
_RELATION_OTHER_MARGIN = 2.0  # off-axis offset this far below half the on-axis one


# --- Scene description ---
@dataclasses.dataclass(frozen=True)
class ShapeObject:
    """One flat-filled object: its box's centre ``cx, cy`` and side ``size`` in 64×64 pixel
    coordinates (x right, y down); the box must be pixel-aligned."""

    colour: str
    shape: str
    cx: float
    cy: float
    size: int

    def __post_init__(self):
        if self.colour not in COLOURS:
            raise ValueError(f"colour must be one of {tuple(COLOURS)}, got {self.colour!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if int(self.size) != self.size or self.size < 1:
            raise ValueError(f"size must be a positive integer, got {self.size!r}")
        if (self.cx - self.size / 2) % 1 or (self.cy - self.size / 2) % 1:
            raise ValueError(f"cx, cy minus size/2 must be whole numbers (pixel-aligned box), "
                             f"got cx={self.cx}, cy={self.cy}, size={self.size}")

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` with exclusive ``x1, y1``."""
        x0 = int(self.cx - self.size / 2)
        y0 = int(self.cy - self.size / 2)
        return x0, y0, x0 + int(self.size), y0 + int(self.size)


@dataclasses.dataclass(frozen=True)
class Scene:
    """A sampled scene; a model trains on ``text`` (the paraphrase, if drawn), evaluation uses ``caption``."""

    kind: str
    objects: tuple[ShapeObject, ...]
    caption: str
    paraphrase: str | None
    requirements: Requirements
    seed: int
    split: str
    index: int

    @property
    def text(self) -> str:
        return self.paraphrase if self.paraphrase is not None else self.caption

    def render(self, resolution: int = CANVAS) -> np.ndarray:
        return render(self.objects, resolution=resolution)


# --- Rendering ---
@functools.lru_cache(maxsize=None)
def shape_mask(shape: str, width: int, height: int | None = None) -> np.ndarray:
    """Boolean ``[height, width]`` mask of ``shape`` filling its box, pixels tested at their
    centres so the drawn pixels' bounding box is the box (spec: sizes are bounding boxes)."""
    height = width if height is None else height
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1, got {width}x{height}")
    ux_W = np.arange(width) + 0.5 - width / 2  # offset of pixel centres from the box centre
    uy_H = np.arange(height) + 0.5 - height / 2
    ux, uy = ux_W[None, :], uy_H[:, None]
    eps = 1e-9
    if shape == "square":
        mask = np.ones((height, width), bool)
    elif shape == "circle":
        mask = (ux / (width / 2)) ** 2 + (uy / (height / 2)) ** 2 <= 1 + eps
    elif shape == "diamond":
        mask = np.abs(ux) / (width / 2) + np.abs(uy) / (height / 2) <= 1 + eps
    else:  # triangle: half-width grows linearly down; use each row's bottom edge
        row_bottom_H1 = (np.arange(height)[:, None] + 1) / height
        mask = np.abs(ux) <= row_bottom_H1 * width / 2 + eps
    mask.flags.writeable = False
    return mask


def _draw(img_HxWx3: np.ndarray, objects: Sequence[ShapeObject]) -> None:
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        if x0 < 0 or y0 < 0 or x1 > CANVAS or y1 > CANVAS:
            raise ValueError(f"object {obj} does not fit inside the {CANVAS}x{CANVAS} canvas")
        img_HxWx3[y0:y1, x0:x1][shape_mask(obj.shape, int(obj.size))] = COLOURS[obj.colour]


def render(objects: Sequence[ShapeObject], resolution: int = CANVAS) -> np.ndarray:
    """``uint8 [resolution, resolution, 3]``: objects on a white 64×64 canvas, downsampled for 32."""
    _check_resolution(resolution)
    img_64x64x3 = np.full((CANVAS, CANVAS, 3), BACKGROUND, np.uint8)
    _draw(img_64x64x3, objects)
    return img_64x64x3 if resolution == CANVAS else downsample(img_64x64x3)


def downsample(img: np.ndarray, factor: int = 2) -> np.ndarray:
    """``[..., H, W, 3]`` uint8 averaged over ``factor × factor`` blocks, rounded half up
    (exact on every platform); spec: the low-res image is ×2."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim < 3 or img.shape[-1] != 3:
        raise ValueError(f"img must be uint8 [..., H, W, 3], got {img.dtype} {img.shape}")
    h, w = img.shape[-3:-1]
    if h % factor or w % factor:
        raise ValueError(f"img height and width must be divisible by {factor}, got {h}x{w}")
    blocks = img.reshape(*img.shape[:-3], h // factor, factor, w // factor, factor, 3).astype(np.uint32)
    area = factor * factor
    return ((blocks.sum(axis=(-4, -2)) + area // 2) // area).astype(np.uint8)


# --- Geometry rules shared with the evaluator ---
def in_region(region: str, cx, cy, margin: float = 0.0):
    """Whether a centre lies ``margin`` px inside ``region`` (spec: quarters; ``center`` =
    middle third); elementwise on arrays."""
    half, third = CANVAS / 2, CANVAS / 6
    if region == "center":
        return (np.abs(cx - half) <= third - margin) & (np.abs(cy - half) <= third - margin)
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    vertical, horizontal = region.split()
    ok_y = (cy < half - margin) if vertical == "top" else (cy > half + margin)
    ok_x = (cx < half - margin) if horizontal == "left" else (cx > half + margin)
    return ok_x & ok_y


def relation_offsets(relation: str, a_cx, a_cy, b_cx, b_cy):
    """``(along, other)`` for "A {relation} B": A's offset to the stated side of B, and the
    absolute offset on the other axis (spec: ``along >= 12`` and ``other <= along / 2``)."""
    if relation == "left of":
        return b_cx - a_cx, np.abs(b_cy - a_cy)
    if relation == "right of":
        return a_cx - b_cx, np.abs(b_cy - a_cy)
    if relation == "above":  # y grows downwards
        return b_cy - a_cy, np.abs(b_cx - a_cx)
    if relation == "below":
        return a_cy - b_cy, np.abs(b_cx - a_cx)
    raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")


# --- Sampling ---
def _check_resolution(resolution) -> None:
    if resolution not in (CANVAS, LOW_RES):
        raise ValueError(f"resolution must be {CANVAS} or {LOW_RES}, got {resolution!r}")


def _rng(seed: int, split_id: int, index: int, stream: int) -> np.random.Generator:
    # One independent stream per (sample, purpose): layout draws never shift
    # when paraphrasing is switched on.
    return np.random.default_rng([seed, split_id, index, stream])


def _draw_size(rng: np.random.Generator, size_class: str) -> int:
    lo, hi = SIZES[size_class]
    return int(rng.integers(lo, hi + 1))


def _place(rng, size, boxes, accept=None, n_candidates=64, rounds=8):
    """Top-left corner for a ``size`` box: inside the canvas, ``MIN_GAP`` from
    ``boxes``, and satisfying ``accept(cx, cy)``; None when nothing fits."""
    lo, hi = EDGE_MARGIN, CANVAS - EDGE_MARGIN - size + 1
    if not boxes and accept is None:
        x0, y0 = rng.integers(lo, hi, size=2)
        return int(x0), int(y0)
    for _ in range(rounds):  # vectorised rejection sampling over a batch of candidates
        xy_Nx2 = rng.integers(lo, hi, size=(n_candidates, 2))
        x0, y0 = xy_Nx2[:, 0], xy_Nx2[:, 1]
        ok = np.ones(n_candidates, bool)
        for bx0, by0, bx1, by1 in boxes:
            gap_x = np.maximum(bx0 - (x0 + size), x0 - bx1)
            gap_y = np.maximum(by0 - (y0 + size), y0 - by1)
            ok &= np.maximum(gap_x, gap_y) >= MIN_GAP
        if accept is not None:
            ok &= accept(x0 + size / 2, y0 + size / 2)
        if ok.any():
            i = int(np.argmax(ok))
            return int(x0[i]), int(y0[i])
    return None


def _place_pair(rng, size_a, size_b, relation, n_candidates=256):
    """Top-left corners ``(xa, ya, xb, yb)`` of two boxes, ``MIN_GAP`` apart, with
    "A {relation} B" holding (plus a safety margin); None when no candidate fits.

    Both boxes are drawn jointly: placing A first often leaves B no room."""
    xa, ya = rng.integers(EDGE_MARGIN, CANVAS - EDGE_MARGIN - size_a + 1, size=(2, n_candidates))
    xb, yb = rng.integers(EDGE_MARGIN, CANVAS - EDGE_MARGIN - size_b + 1, size=(2, n_candidates))
    gap_x = np.maximum(xb - (xa + size_a), xa - (xb + size_b))
    gap_y = np.maximum(yb - (ya + size_a), ya - (yb + size_b))
    along, other = relation_offsets(relation, xa + size_a / 2, ya + size_a / 2,
                                    xb + size_b / 2, yb + size_b / 2)
    ok = ((np.maximum(gap_x, gap_y) >= MIN_GAP) & (along >= RELATION_MIN_DIFF)
          & (other <= along / 2 - _RELATION_OTHER_MARGIN))
    if not ok.any():
        return None
    i = int(np.argmax(ok))
    return int(xa[i]), int(ya[i]), int(xb[i]), int(yb[i])


def _obj(colour_shape, size, xy) -> ShapeObject:
    return ShapeObject(colour_shape[0], colour_shape[1], xy[0] + size / 2, xy[1] + size / 2, size)


def _sample_layout(kind: str, split: str, rng: np.random.Generator):
    pairs = TRAIN_PAIRS if split == "train" else HOLDOUT_PAIRS
    while True:  # restart on the rare layout that leaves no room
        if kind == "single":
            pair, size_class = pick(rng, pairs), pick(rng, tuple(SIZES))
            size = _draw_size(rng, size_class)
            xy = _place(rng, size, [])
            return [_obj(pair, size, xy)], Requirements(kind, *pair, size=size_class)
        if kind == "placed":
            pair, region = pick(rng, pairs), pick(rng, REGIONS)
            size = _draw_size(rng, pick(rng, tuple(SIZES)))
            if region == "center":
                accept = lambda cx, cy: in_region("center", cx, cy, _CENTER_MARGIN)  # noqa: E731
            else:  # keep quarter scenes visibly off-centre, not just across a midline
                accept = lambda cx, cy: (in_region(region, cx, cy, _QUARTER_MARGIN)  # noqa: E731
                                         & ~in_region("center", cx, cy, -_NOT_CENTER_MARGIN))
            xy = _place(rng, size, [], accept)
            if xy is None:
                continue
            return [_obj(pair, size, xy)], Requirements(kind, *pair, region=region)
        if kind == "count":
            pair, count = pick(rng, pairs), pick(rng, tuple(NUMBER_WORDS.values()))
            objects, boxes = [], []
            for _ in range(count):
                size = _draw_size(rng, "small")  # spec: multi-object scenes use small objects
                xy = _place(rng, size, boxes)
                if xy is None:
                    break
                objects.append(_obj(pair, size, xy))
                boxes.append(objects[-1].box)
            if len(objects) < count:
                continue
            return objects, Requirements(kind, *pair, count=count)
        if kind == "relation":
            if split == "train":
                a = pick(rng, TRAIN_PAIRS)
                b = pick(rng, tuple(p for p in TRAIN_PAIRS if p != a))
            else:  # at least one hold-out pair, on either side of the relation
                h = pick(rng, HOLDOUT_PAIRS)
                o = pick(rng, tuple(p for p in ALL_PAIRS if p != h))
                a, b = (h, o) if rng.random() < 0.5 else (o, h)
            relation = pick(rng, RELATIONS)
            size_a, size_b = _draw_size(rng, "small"), _draw_size(rng, "small")
            xy = _place_pair(rng, size_a, size_b, relation)
            if xy is None:
                continue
            req = Requirements(kind, *a, relation=relation, other_colour=b[0], other_shape=b[1])
            return [_obj(a, size_a, xy[:2]), _obj(b, size_b, xy[2:])], req
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def sample_scene(seed: int, split: str, index: int, *, paraphrase_prob: float = 0.0,
                 kinds: Sequence[str] = KINDS) -> Scene:
    """Scene ``index`` of ``split`` (``holdout`` scenes hold a hold-out pair, ``train`` ones never),
    a pure function of its arguments (spec: "Determinism"). The paraphrase, drawn with
    ``paraphrase_prob``, has its own random stream: pixels and captions do not depend on it."""
    seed = check_int("seed", seed)
    index = check_int("index", index)
    split_id = check_split(split)
    kinds = check_kinds(kinds)
    if not 0.0 <= paraphrase_prob <= 1.0:
        raise ValueError(f"paraphrase_prob must be in [0, 1], got {paraphrase_prob!r}")
    kind = kinds[index % len(kinds)]
    objects, req = _sample_layout(kind, split, _rng(seed, split_id, index, 0))
    text = None
    if paraphrase_prob > 0:
        rng_text = _rng(seed, split_id, index, 1)
        if rng_text.random() < paraphrase_prob:
            text = paraphrase(req, rng_text)
    return Scene(kind, tuple(objects), canonical_caption(req), text, req, seed, split, index)


def generate(n: int, *, seed: int = 0, split: str = "train", start: int = 0,
             kinds: Sequence[str] = KINDS, paraphrase_prob: float = 0.0,
             resolution: int = CANVAS) -> tuple[np.ndarray, list[str], list[Scene]]:
    """Samples ``start .. start + n - 1`` of a split: ``uint8 [n, res, res, 3]`` images, each
    scene's ``text``, and the scenes."""
    n = check_int("n", n)
    start = check_int("start", start)
    _check_resolution(resolution)
    scenes = [sample_scene(seed, split, start + i, paraphrase_prob=paraphrase_prob, kinds=kinds)
              for i in range(n)]
    images_Nx64x64x3 = np.full((n, CANVAS, CANVAS, 3), BACKGROUND, np.uint8)
    for img, scene in zip(images_Nx64x64x3, scenes):
        _draw(img, scene.objects)
    images = images_Nx64x64x3 if resolution == CANVAS else downsample(images_Nx64x64x3)
    return images, [s.text for s in scenes], scenes
