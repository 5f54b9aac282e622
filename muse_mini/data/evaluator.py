"""A program that says whether a Shapes image satisfies its canonical caption.

Muse judges cardinality and composition by eye (§3.1, Fig. 6) and caption alignment with
human raters (§3.2.1); in the Shapes world (``docs/shapes.md``, "The evaluator") the judge
is a program, and **caption accuracy** is the fraction of images it accepts. Generated
images are blurry and off-colour, so every step is tolerant:

1. **Pixels.** Each pixel is a mix ``white + alpha * (c - white)`` of background and a
   palette colour (what blur and downsampling do at edges); it is ink of the best colour
   when ``alpha >= MIN_ALPHA`` and the residual is at most ``MAX_COLOUR_RESIDUAL``.
2. **Objects.** 8-connected components of ink, each of its majority colour; components
   under ``MIN_AREA_64`` px are speckles.
3. **Shapes.** Each shape is drawn where the ink's mass says, at the size its area says,
   and scored by soft IoU (:func:`muse_mini.data.shape_fit.fit_shape`).
4. **Flat fill.** An object with a hole or a notch is ``unknown``
   (:func:`muse_mini.data.shape_fit.flat_fill`).
5. **Rules.** The spec's kind rules as written, in 64×64 coordinates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from muse_mini.data.captions import COLOURS, KINDS, Requirements, parse_caption
from muse_mini.data.shape_fit import MAX_CONCAVITY, MAX_HOLE_64, fit_shape, flat_fill
from muse_mini.data.shapes import CANVAS, LOW_RES, RELATION_MIN_DIFF, in_region, relation_offsets

# Bumped whenever an image can get another verdict, so stored accuracies are recomputed
# (the versions are listed in docs/evaluation.md).
EVALUATOR_VERSION = 4
MIN_ALPHA = 0.5  # a pixel is "ink" when it is at least half palette colour
MAX_COLOUR_RESIDUAL = 90.0  # RGB distance (0..255) off the white-to-colour line
MIN_AREA_64 = 40  # px at 64×64; the smallest object (16 px triangle) has ~136
SIZE_RANGES = {"small": (16, 20), "large": (26, 32)}  # px at 64×64 (spec: bounding-box sides)
SIZE_TOLERANCE = 1.0  # px at 64×64 either side of a range: the fitted size is a whole number near the ink mass

_COLOUR_NAMES = tuple(COLOURS)
_INK_Cx3 = np.array([COLOURS[c] for c in _COLOUR_NAMES], float) - 255.0
_INK_NORM2_C = (_INK_Cx3 ** 2).sum(axis=1)
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as in JPEG
_LUMA_C = (_INK_Cx3 + 255.0) @ _LUMA


@dataclasses.dataclass(frozen=True)
class FoundObject:
    """An object found in an image: the fitted box's centre and side in 64×64 coordinates,
    the component's pixel ``area``, the fit's ``shape_iou``, and ``flaw`` (e.g. ``"holed
    circle"``) when a blob that resembles a shape counts as ``unknown``."""

    colour: str
    shape: str
    cx: float
    cy: float
    size: float
    area: int
    shape_iou: float
    concavity: float = 0.0
    flaw: str = ""

    def describe(self) -> str:
        shape = f"{self.shape} ({self.flaw})" if self.flaw else self.shape
        return f"{self.colour} {shape} at ({self.cx:.0f}, {self.cy:.0f}) size {self.size:.0f}"


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Verdict for one image–caption pair: ``ok`` iff ``reasons`` is empty."""

    ok: bool
    caption: str
    requirements: Requirements
    objects_found: list[FoundObject]
    reasons: list[str]
    resolution: int


def as_image(image, name: str = "image") -> np.ndarray:
    """A 32×32 or 64×64 RGB image (uint8, or floats in [0, 1] whose small overshoots are
    clipped) as float ``[H, W, 3]`` in 0..255."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3 or img.shape[0] != img.shape[1] \
            or img.shape[0] not in (LOW_RES, CANVAS):
        raise ValueError(f"{name} must have shape (32, 32, 3) or (64, 64, 3), got {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if np.issubdtype(img.dtype, np.floating) or "float" in img.dtype.name:  # incl. bfloat16
        img = img.astype(np.float64)
        # small decoder overshoots are clipped; a 0..255 float image is a mistake
        if not np.isfinite(img).all() or img.min() < -0.5 or img.max() > 1.5:
            raise ValueError(f"{name}: float images must hold values in [0, 1] "
                             f"(got {img.min():.3g}..{img.max():.3g}; pass uint8 for 0..255)")
        return np.clip(img, 0.0, 1.0) * 255.0
    raise ValueError(f"{name} must be uint8 or float in [0, 1], got dtype {img.dtype}")


def _pixel_model(img_HxWx3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel and palette colour: mix weight ``alpha`` and residual (step 1)."""
    d_HxWx3 = np.asarray(img_HxWx3, float) - 255.0
    dot_HxWxC = d_HxWx3 @ _INK_Cx3.T
    alpha_HxWxC = np.clip(dot_HxWxC / _INK_NORM2_C, 0.0, 1.0)
    # |d - alpha * ink|^2 expanded, to avoid an [H, W, C, 3] temporary
    resid2_HxWxC = ((d_HxWx3 ** 2).sum(-1, keepdims=True) - 2 * alpha_HxWxC * dot_HxWxC
                    + alpha_HxWxC ** 2 * _INK_NORM2_C)
    # Blend in the luminance estimate of alpha: equal to it on clean renders, but
    # JPEG keeps luminance at full resolution while it halves chroma, which
    # otherwise erases the shape of low-contrast colours (yellow) at 32×32.
    luma_HxW = np.asarray(img_HxWx3, float) @ _LUMA
    lum_alpha_HxWxC = np.clip((255.0 - luma_HxW)[..., None] / (255.0 - _LUMA_C), 0.0, 1.0)
    alpha_HxWxC = 0.5 * (alpha_HxWxC + lum_alpha_HxWxC)
    return alpha_HxWxC, np.sqrt(np.maximum(resid2_HxWxC, 0.0))


def classify_pixels(img_HxWx3: np.ndarray) -> np.ndarray:
    """Palette index per pixel (``-1`` = background or unknown colour), step 1 above."""
    return _labels(*_pixel_model(img_HxWx3))


def _labels(alpha_HxWxC, resid_HxWxC) -> np.ndarray:
    best_HxW = resid_HxWxC.argmin(axis=-1)
    alpha = np.take_along_axis(alpha_HxWxC, best_HxW[..., None], -1)[..., 0]
    resid = np.take_along_axis(resid_HxWxC, best_HxW[..., None], -1)[..., 0]
    return np.where((alpha >= MIN_ALPHA) & (resid <= MAX_COLOUR_RESIDUAL), best_HxW, -1)


def find_objects(image) -> list[FoundObject]:
    """All objects in an image (steps 1–3 above), sorted by position (y, x)."""
    return _find_objects(as_image(image))


def _find_objects(img: np.ndarray) -> list[FoundObject]:
    factor = CANVAS // img.shape[0]
    min_area = MIN_AREA_64 / factor ** 2
    alpha_HxWxC, resid_HxWxC = _pixel_model(img)
    labels_HxW = _labels(alpha_HxWxC, resid_HxWxC)
    # Segment ink of any colour, then give each component its majority colour:
    # off-colour renders split one object between neighbouring palette colours
    # (yellow/orange, red/orange), and objects are >= 2 px apart anyway.
    eight = np.ones((3, 3), bool)
    comps_HxW, _ = ndimage.label(labels_HxW >= 0, structure=eight)
    areas = np.bincount(comps_HxW.ravel())
    found = []
    for j, (sy, sx) in enumerate(ndimage.find_objects(comps_HxW), start=1):
        if areas[j] < min_area:  # speckle
            continue
        pad = 2  # room for edge pixels below alpha 0.5 and for candidate boxes
        (r0, r1) = max(sy.start - pad, 0), min(sy.stop + pad, img.shape[0])
        (c0, c1) = max(sx.start - pad, 0), min(sx.stop + pad, img.shape[1])
        comp_hxw = comps_HxW[r0:r1, c0:c1] == j
        k = int(np.bincount(labels_HxW[r0:r1, c0:c1][comp_hxw]).argmax())
        near_hxw = ndimage.binary_dilation(comp_hxw, eight)
        alpha_hxw = np.where(near_hxw, alpha_HxWxC[r0:r1, c0:c1, k], 0.0)
        shape, iou, cx, cy, size = fit_shape(alpha_hxw, (r0, c0), factor)
        concavity, holes = flat_fill(alpha_hxw, MIN_ALPHA)
        bad = {"holed": holes * factor ** 2 > MAX_HOLE_64, "notched": concavity > MAX_CONCAVITY}
        flaw = " ".join(w for w, b in bad.items() if b)
        flaw, shape = (f"{flaw} {shape}", "unknown") if flaw and shape != "unknown" else ("", shape)
        found.append(FoundObject(_COLOUR_NAMES[k], shape, cx=float(cx), cy=float(cy), size=size,
                                 area=int(areas[j]), shape_iou=round(iou, 3),
                                 concavity=round(concavity, 3), flaw=flaw))
    return sorted(found, key=lambda o: (o.cy, o.cx))


def _matches(obj: FoundObject, colour: str, shape: str) -> bool:
    return obj.colour == colour and obj.shape == shape


def _expect_only(found, n, noun, reasons, strict) -> list[FoundObject]:
    """Objects matching ``noun`` (a colour–shape pair); records count problems."""
    hits = [o for o in found if _matches(o, *noun)]
    others = [o for o in found if not _matches(o, *noun)]
    name = " ".join(noun)
    if len(hits) != n:
        reasons.append(f"expected {n} {name}{'s' if n != 1 else ''}, found {len(hits)}")
    if strict and others:
        reasons.append("unexpected objects: " + "; ".join(o.describe() for o in others))
    return hits


def check(req: Requirements, found: Sequence[FoundObject], *, strict: bool = True) -> list[str]:
    """Reasons why ``found`` does not satisfy ``req`` (empty list = satisfied). ``strict``: the
    image holds the named objects and nothing else, for every kind (the spec says so for ``count``)."""
    reasons: list[str] = []
    if not found:
        return ["no objects found (blank image?)"]
    noun = (req.colour, req.shape)
    if req.kind in ("single", "placed", "count"):
        hits = _expect_only(found, req.count, noun, reasons, strict)
        if not hits and found:
            reasons.append("found instead: " + "; ".join(o.describe() for o in found))
        if req.kind == "single" and len(hits) == 1:
            low, high = SIZE_RANGES[req.size]
            if not low - SIZE_TOLERANCE <= hits[0].size <= high + SIZE_TOLERANCE:
                reasons.append(f"expected a {req.size} object ({low}-{high} px at 64x64), "
                               f"found size {hits[0].size:.0f} px")
        if req.kind == "placed" and len(hits) == 1:
            if not bool(in_region(req.region, hits[0].cx, hits[0].cy)):
                reasons.append(f"{hits[0].describe()} is not in the {req.region}")
        return reasons
    other = (req.other_colour, req.other_shape)
    hits_a = [o for o in found if _matches(o, *noun)]
    hits_b = [o for o in found if _matches(o, *other)]
    for hits, pair in ((hits_a, noun), (hits_b, other)):
        if len(hits) != 1:
            reasons.append(f"expected 1 {' '.join(pair)}, found {len(hits)}")
    extra = [o for o in found if o not in hits_a and o not in hits_b]
    if strict and extra:
        reasons.append("unexpected objects: " + "; ".join(o.describe() for o in extra))
    if len(hits_a) == 1 and len(hits_b) == 1:
        a, b = hits_a[0], hits_b[0]
        along, off = relation_offsets(req.relation, a.cx, a.cy, b.cx, b.cy)
        if along < RELATION_MIN_DIFF or off > along / 2:
            axis = "x" if req.relation in ("left of", "right of") else "y"
            reasons.append(
                f"{a.describe()} is not {req.relation} {b.describe()}: needs the {axis} "
                f"difference >= {RELATION_MIN_DIFF:.0f} px and the other axis within half of it, "
                f"got {float(along):.1f} and {float(off):.1f}")
    return reasons


def evaluate(image, caption: str, *, strict: bool = True) -> Evaluation:
    """Check one image (32×32 or 64×64 RGB) against one canonical caption (ValueError otherwise)."""
    img = as_image(image)
    req = parse_caption(caption)
    found = _find_objects(img)
    reasons = check(req, found, strict=strict)
    return Evaluation(not reasons, caption, req, found, reasons, img.shape[0])


def evaluate_batch(images, captions: Sequence[str], *, strict: bool = True) -> list[Evaluation]:
    """:func:`evaluate` over ``images [N, H, W, 3]`` (or a list) and N captions."""
    if isinstance(captions, str):
        raise ValueError("captions must be a sequence of str, got a single str")
    if len(images) != len(captions):
        raise ValueError(f"images and captions must have the same length, "
                         f"got {len(images)} and {len(captions)}")
    results = []
    for i, (image, caption) in enumerate(zip(images, captions)):
        img = as_image(image, name=f"images[{i}]")
        results.append(evaluate(img / 255.0, caption, strict=strict))
    return results


def _summary(results: Sequence[Evaluation]) -> dict:
    n = len(results)
    return {"accuracy": (sum(r.ok for r in results) / n) if n else None,
            "n_images": n, "n_prompts": len({r.caption for r in results})}


def caption_accuracy(images, captions: Sequence[str], *, strict: bool = True) -> dict:
    """Caption accuracy, overall, ``per_kind`` and ``per_split`` (``in_distribution``, ``holdout``:
    a caption naming a hold-out pair); each with ``n_images``, ``n_prompts``; None when empty."""
    results = evaluate_batch(images, captions, strict=strict)

    def by_kind(rs):
        return {k: _summary([r for r in rs if r.requirements.kind == k]) for k in KINDS}

    out = {**_summary(results), "per_kind": by_kind(results), "per_split": {}}
    for name, held in (("in_distribution", False), ("holdout", True)):
        rs = [r for r in results if r.requirements.is_holdout == held]
        out["per_split"][name] = {**_summary(rs), "per_kind": by_kind(rs)}
    return out
