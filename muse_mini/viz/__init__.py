"""Figures (``viz.figures``, re-exported here) and the notebook widgets (``viz.widgets``, ``viz.edit_widgets``)."""

from muse_mini.viz.figures import (
    bicubic_upsample, image_grid, inpaint_steps, mask_overlay, plot_metrics, save, side_by_side, token_map,
)

__all__ = ["bicubic_upsample", "image_grid", "inpaint_steps", "mask_overlay", "plot_metrics", "save", "side_by_side",
           "token_map"]
