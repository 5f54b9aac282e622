"""A second, deliberately simple judge of Shapes images, written from ``docs/shapes.md`` alone.

It audits :mod:`muse_mini.data.evaluator` (issue 21): it shares none of its
code (only NumPy and ``scipy.ndimage.label``), parses captions with its own
regular expressions, and reads the spec as literally as pixels allow:

- each pixel takes the nearest of white and the six palette colours;
- an object is a 4-connected component of coloured pixels, of its majority
  colour (specks under a quarter of the smallest object's area are ignored);
- how much of each pixel that colour covers gives the box (the sum of each
  column's and each row's largest cover), its centre and its size, in 64×64
  coordinates; at 32×32 an edge block is part-covered, and counts so;
- the shape follows from how much of the box is filled and where the widest
  row is: a square fills it, a disc about π/4, a triangle and a diamond about
  half, with the widest rows at the bottom for the triangle and in the middle
  for the diamond;
- the caption's rules are the spec's, without slack: sizes 16–20 / 26–32 px
  (give or take a measurement's pixel, 1.5 at 32×32), regions by quarter or
  middle third, relations ``along >= 12`` and ``other <= along / 2``, and
  nothing in the image that the caption does not name.
"""

from __future__ import annotations

import re

import numpy as np
from scipy import ndimage

PALETTE = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (240, 200, 30), "purple": (150, 60, 200), "orange": (245, 130, 30)}
NUMBERS = {"two": 2, "three": 3, "four": 4}
NOUN = rf"({'|'.join(PALETTE)}) (circle|square|triangle|diamond)"  # a colour–shape pair, as two groups
CAPTION_FORMS = {  # each kind's canonical caption, its fields as groups
    "single": re.compile(rf"an? (small|large) {NOUN}$"),
    "placed": re.compile(rf"an? {NOUN} in the (top left|top right|bottom left|bottom right|center)$"),
    "count": re.compile(rf"(two|three|four) {NOUN}s$"),
    "relation": re.compile(rf"an? {NOUN} (left of|right of|above|below) an? {NOUN}$"),
}


def objects(image) -> list[dict]:
    """Every object in a 32×32 or 64×64 uint8 image: colour, shape, centre and size at 64×64."""
    img = np.asarray(image, float)
    scale = 64 // img.shape[0]
    colours = np.array([(255, 255, 255), *PALETTE.values()], float)
    nearest = ((img[:, :, None, :] - colours) ** 2).sum(-1).argmin(-1)  # 0 = white
    ink, n = ndimage.label(nearest > 0)  # 4-connected: objects are at least 2 px apart
    found = []
    for j in range(1, n + 1):
        inside = ink == j
        if inside.sum() * scale ** 2 < 32:  # a speck: under a quarter of a small triangle's 128 px
            continue
        # pixels at an edge mix the colour with white and may be nearer another colour: take the majority
        k = np.bincount(nearest[inside]).argmax()
        # how much of each pixel the colour covers (edge blocks of a 32×32 image are part-covered)
        ink_colour = colours[k] - 255
        cover = np.clip((img - 255) @ ink_colour / (ink_colour @ ink_colour), 0, 1)
        cover *= ndimage.binary_dilation(inside, np.ones((3, 3)))
        found.append({"colour": list(PALETTE)[k - 1], "scale": scale, **_measure(cover, scale)})
    return found


def _measure(cover, scale: int) -> dict:
    """Box (from the most-covered pixel of each row and column), fill and widest row of one object."""
    cols, rows = cover.max(0), cover.max(1)
    w, h = cols.sum(), rows.sum()
    cx = ((np.arange(len(cols)) + 0.5) * cols).sum() / w
    cy = ((np.arange(len(rows)) + 0.5) * rows).sum() / h
    widths = cover.sum(1)
    widest_y = ((np.arange(len(rows)) + 0.5) * (widths >= 0.9 * widths.max())).sum() / (widths >= 0.9 * widths.max()).sum()
    return {"shape": _shape(cover.sum() / (w * h), w / h, (widest_y - (cy - h / 2)) / h),
            "cx": cx * scale, "cy": cy * scale, "size": max(w, h) * scale}


def _shape(fill: float, aspect: float, widest: float) -> str:
    """Square, circle, triangle or diamond from how full the box is and where its widest rows are (0 top, 1 bottom)."""
    if not 0.75 <= aspect <= 1.33 or fill < 0.35:
        return "unknown"
    if fill >= 0.9:
        return "square"
    if fill >= 0.68:
        return "circle"
    return "triangle" if widest > 0.7 else "diamond" if 0.3 <= widest <= 0.7 else "unknown"


def parse(caption: str) -> tuple[str, tuple]:
    for kind, form in CAPTION_FORMS.items():
        m = form.match(caption)
        if m:
            return kind, m.groups()
    raise ValueError(f"not a canonical Shapes caption: {caption!r}")


def _size_ok(size_class: str, obj: dict) -> bool:
    low, high = (16, 20) if size_class == "small" else (26, 32)
    slack = 0.5 + obj["scale"] / 2  # a 32×32 image blurs a diamond's corners by another half pixel
    return low - slack <= obj["size"] <= high + slack


def _in_region(region: str, cx: float, cy: float) -> bool:
    if region == "center":
        return abs(cx - 32) <= 64 / 6 and abs(cy - 32) <= 64 / 6
    vertical, horizontal = region.split()
    return (cy < 32 if vertical == "top" else cy > 32) and (cx < 32 if horizontal == "left" else cx > 32)


def _relation_ok(relation: str, a: dict, b: dict) -> bool:
    dx, dy = b["cx"] - a["cx"], b["cy"] - a["cy"]
    along, other = {"left of": (dx, abs(dy)), "right of": (-dx, abs(dy)),
                    "above": (dy, abs(dx)), "below": (-dy, abs(dx))}[relation]
    return along >= 12 and other <= along / 2


def reasons(image, caption: str) -> list[str]:
    """Why ``image`` fails ``caption`` by the spec (empty: it satisfies it)."""
    kind, groups = parse(caption)
    found = objects(image)
    names = [(o["colour"], o["shape"]) for o in found]
    if kind == "relation":
        a, b = (groups[0], groups[1]), (groups[3], groups[4])
        wanted = {a: 1, b: 1} if a != b else {a: 2}
    else:
        noun = (groups[1], groups[2]) if kind in ("single", "count") else (groups[0], groups[1])
        wanted = {noun: NUMBERS.get(groups[0], 1) if kind == "count" else 1}
    out = [f"expected {n} {' '.join(noun)}, found {names.count(noun)}" for noun, n in wanted.items()
           if names.count(noun) != n]
    out += [f"unnamed object: {' '.join(name)}" for name in names if name not in wanted]
    if out:
        return out
    if kind == "single" and not _size_ok(groups[0], found[0]):
        out.append(f"size {found[0]['size']} px is not {groups[0]}")
    if kind == "placed" and not _in_region(groups[2], found[0]["cx"], found[0]["cy"]):
        out.append(f"centre ({found[0]['cx']}, {found[0]['cy']}) is not in the {groups[2]}")
    if kind == "relation":
        first = next(o for o in found if (o["colour"], o["shape"]) == a)
        second = next(o for o in found if (o["colour"], o["shape"]) == b and o is not first)
        if not _relation_ok(groups[2], first, second):
            out.append(f"centres ({first['cx']}, {first['cy']}) and ({second['cx']}, {second['cy']}) "
                       f"break '{groups[2]}'")
    return out


def accepts(image, caption: str) -> bool:
    return not reasons(image, caption)
