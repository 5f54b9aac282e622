"""Notebook 05's exercises: inpainting's pixel-to-token mask and paste-back (§3.3.1), checked against
:func:`muse_mini.decoding.editing.pixel_mask_to_token_mask` and :func:`muse_mini.editing.methods.paste`."""

from __future__ import annotations

import numpy as np

from muse_mini.course.checking import Exercise, Wrong, describe, diagnose, expect_shape, run_check, to_array
from muse_mini.decoding.editing import pixel_mask_to_token_mask
from muse_mini.editing.methods import paste

__all__ = ["check_token_mask", "check_paste_back", "EXERCISES"]

_ANY = "a token is masked if ANY of its pixels is: reshape to (grid, H // grid, grid, W // grid), .any(axis=(1, 3))"


def _pixel_masks():
    """``(mask_HxW, grid)``: a rectangle off the token borders, scattered pixels, a disc, the whole image."""
    rng = np.random.default_rng(5)
    rect = np.zeros((16, 16), bool)
    rect[3:10, 5:15] = True
    sparse = rng.uniform(size=(32, 32)) < 0.03
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 25) ** 2 + (xx - 40) ** 2 < 15**2
    wide = np.zeros((16, 24), bool)  # tokens of 4×6 pixels
    wide[2:7, 1:20] = True
    one = np.zeros((8, 8), bool)
    one[5, 2] = True
    return [(rect, 4), (sparse, 8), (disc, 16), (wide, 4), (one, 1), (np.zeros((8, 8), bool), 2)]


def _token_mask_mistakes(mask, grid):
    h, w = mask.shape
    patches = mask.reshape(grid, h // grid, grid, w // grid)
    return [
        (lambda: patches.all(axis=(1, 3)), "any->all: you masked a token only when ALL its pixels are", _ANY),
        (lambda: patches.mean(axis=(1, 3)) > 0.5, "you took a majority vote over each token's pixels", _ANY),
        (lambda: mask[:: h // grid, :: w // grid], "you looked at one pixel per token", _ANY),
        (lambda: patches.any(axis=(1, 3)).T, "rows and columns are swapped",
         "token (i, j) covers pixel rows i·H/grid ... and columns j·W/grid ..."),
        (lambda: mask.reshape(grid, grid, h // grid, w // grid).any(axis=(2, 3)),
         "the patches were cut the wrong way", "reshape to (grid, H // grid, grid, W // grid), then reduce axes 1 and 3"),
    ]


def check_token_mask(fn):
    """``token_mask(pixel_mask_HxW, grid) -> bool grid×grid``: a token is masked when any pixel of its patch is
    (so the whole region is regenerated, §3.3.1)."""

    def body(learner):
        for mask, grid in _pixel_masks():
            call = describe("token_mask", pixel_mask_HxW=mask, grid=grid)
            out = to_array(learner(mask.copy(), grid, call=call), call, what="a boolean grid")
            if out.shape == (grid * grid,) and grid > 1:
                raise Wrong(f"{call} returned the flat vector of {grid * grid}", "reshape it to (grid, grid)")
            expect_shape(out, (grid, grid), call, "one entry per token: grid × grid")
            if out.dtype != np.bool_:
                raise Wrong(f"{call} returned dtype {out.dtype}", "return booleans (.any(...) gives them)")
            want = np.asarray(pixel_mask_to_token_mask(mask, grid)).reshape(grid, grid)
            diagnose(out, want, call, _token_mask_mistakes(mask, grid), hint=_ANY, what="token masks",
                     rtol=0.0, atol=0.0)

    return run_check("token_mask", fn, body)


def _paste_cases():
    rng = np.random.default_rng(6)
    cases = []
    for h, w in [(16, 16), (32, 24), (8, 8)]:
        original = rng.integers(0, 128, (h, w, 3), dtype=np.uint8)
        generated = rng.integers(128, 256, (h, w, 3), dtype=np.uint8)  # every pixel differs from the original
        mask = np.zeros((h, w), bool)
        mask[h // 4: h // 2 + 3, w // 3: w - 2] = True
        cases.append((original, generated, mask))
    return cases


def check_paste_back(fn):
    """``paste_back(original, generated, pixel_mask) -> image``: the generated pixels inside the mask, the
    original's outside (§3.3.1; the decoder also moves pixels next to changed tokens a little)."""

    def body(learner):
        for original, generated, mask in _paste_cases():
            call = describe("paste_back", original=original, generated=generated, pixel_mask=mask)
            out = to_array(learner(original.copy(), generated.copy(), mask.copy(), call=call), call,
                           what="an image")
            expect_shape(out, original.shape, call, "broadcast the mask over the colour channels: mask[..., None]")
            if out.dtype != np.uint8:
                raise Wrong(f"{call} returned dtype {out.dtype}", "return uint8 pixels like the inputs (.astype(np.uint8))")
            want = paste(generated[None], original[None], mask[None])[0]
            diagnose(out, want, call, [
                (np.where(mask[..., None], original, generated), "you kept the generated pixels OUTSIDE the mask and "
                 "the original inside", "np.where(mask[..., None], generated, original): the mask marks what was "
                 "regenerated"),
                (generated, "you returned the generated image unchanged", "outside the mask, put the original back"),
                (original, "you returned the original unchanged", "inside the mask, use the generated pixels"),
            ], hint="np.where(mask[..., None], generated, original)", what="pixels", rtol=0.0, atol=0.0)

    return run_check("paste_back", fn, body)


EXERCISES = (
    Exercise("05", "token_mask", check_token_mask, "§3.3.1",
             "a pixel mask to a grid×grid token mask: a token is masked if any of its pixels is"),
    Exercise("05", "paste_back", check_paste_back, "§3.3.1",
             "the generated pixels inside the mask, the original's outside"),
)
