"""Editing with a trained pipeline (Muse §3.3): inpainting, outpainting and mask-free editing.

- :mod:`muse_mini.editing.inputs`: images and masks from arrays, PIL images or files, checked.
- :mod:`muse_mini.editing.methods`: inpainting (multi-scale through super-res) and mask-free editing.
- :mod:`muse_mini.editing.outpaint`: outside a kept region, or past the frame in overlapping windows.

The token-level pieces they build on are in :mod:`muse_mini.decoding.editing`.
Users call them as :meth:`muse_mini.Pipeline.inpaint`, ``outpaint`` and ``edit``.
"""

from muse_mini.editing.inputs import as_images, as_masks
from muse_mini.editing.methods import EditResult, edit, inpaint
from muse_mini.editing.outpaint import DIRECTIONS, outpaint, window_starts

__all__ = ["DIRECTIONS", "EditResult", "as_images", "as_masks", "edit", "inpaint", "outpaint", "window_starts"]
