"""Notebook widgets for editing (Muse §3.3): paint a mask over token cells, step through a mask-free edit.

A token is what the model regenerates, so a mask painted in token cells is
exactly what inpainting uses. The edit viewer decodes every iteration once
(Figure 12), so sliding only indexes them.
"""

from __future__ import annotations

import io

import ipywidgets as widgets
import numpy as np
from PIL import Image

from muse_mini.models.codec import decode_tokens
from muse_mini.viz.widgets import PngFigure, figure_to_png, show_png, widget_bundle

CELL_PX = 28
PRESSED_COLOUR = "#ff4fa3"
CELL_BORDER = "1px solid #c8c8c8"
BORDER_RGB = (0xc8, 0xc8, 0xc8)
UNMARKED = "\u00a0"  # a no-break space: see MaskPainter._paint


def _cell_colour(image_HxWx3: np.ndarray, grid: int, row: int, col: int) -> str:
    patch = image_HxWx3.shape[0] // grid
    mean = image_HxWx3[row * patch:(row + 1) * patch, col * patch:(col + 1) * patch].reshape(-1, 3).mean(0)
    return "#%02x%02x%02x" % tuple(int(v) for v in mean)


class MaskPainter:
    """A ``grid × grid`` board of buttons coloured like ``image``; a click marks a cell for regeneration.

    ``token_mask`` is the (grid, grid) selection and ``mask`` the same at the
    image's pixels, for :meth:`Pipeline.inpaint <muse_mini.pipeline.Pipeline.inpaint>`. The cells are
    ``Button`` widgets because their ``style.button_color`` reaches the browser
    (a ``ToggleButton``'s style has no colour).
    """

    def __init__(self, image_HxWx3, grid: int):
        image = np.asarray(image_HxWx3)
        if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[0] % grid:
            raise ValueError(f"image: expected a square (S, S, 3) image with S a multiple of grid {grid}, "
                             f"got {image.shape}")
        self.image, self.grid = image, grid
        self._pressed = np.zeros((grid, grid), bool)
        layout = widgets.Layout(width=f"{CELL_PX}px", height=f"{CELL_PX}px", padding="0", margin="0",
                                border=CELL_BORDER)  # a white cell on a white page still shows
        self.cells = [[widgets.Button(layout=layout, tooltip=f"token ({r}, {c})") for c in range(grid)]
                      for r in range(grid)]
        for r, row in enumerate(self.cells):
            for c, cell in enumerate(row):
                cell.on_click(lambda _, r=r, c=c: self.toggle(r, c))
                self._paint(r, c)
        self.clear = widgets.Button(description="clear")
        self.clear.on_click(lambda _: self.select([], []))
        board = widgets.GridBox([cell for row in self.cells for cell in row], layout=widgets.Layout(
            grid_template_columns=f"repeat({grid}, {CELL_PX}px)", grid_gap="1px"))
        self.widget = widgets.VBox([board, self.clear])

    def _paint(self, r: int, c: int) -> None:
        cell, pressed = self.cells[r][c], bool(self._pressed[r, c])
        cell.style.button_color = PRESSED_COLOUR if pressed else _cell_colour(self.image, self.grid, r, c)
        # A Button whose description becomes "" keeps showing the old text in the browser.
        cell.description = "×" if pressed else UNMARKED

    def toggle(self, row: int, col: int) -> None:
        """Mark cell ``(row, col)`` for regeneration, or unmark it (what a click does)."""
        self._pressed[row, col] = not self._pressed[row, col]
        self._paint(row, col)

    def select(self, rows, cols) -> None:
        """Mark exactly the cells ``(rows[i], cols[i])``; every other cell is unmarked."""
        chosen = np.zeros_like(self._pressed)
        chosen[np.asarray(rows, int), np.asarray(cols, int)] = True
        for r, c in zip(*np.nonzero(chosen != self._pressed)):
            self.toggle(int(r), int(c))

    @property
    def token_mask(self) -> np.ndarray:
        return self._pressed.copy()

    @property
    def mask(self) -> np.ndarray:
        patch = self.image.shape[0] // self.grid
        return np.kron(self.token_mask, np.ones((patch, patch), bool))

    def board_png(self) -> bytes:
        """The board as the browser draws it (cell colours, marked cells pink), for pages without widgets."""
        hex_colours = [[cell.style.button_color.lstrip("#") for cell in row] for row in self.cells]
        board = np.array([[[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in row] for row in hex_colours], np.uint8)
        pixels = np.kron(board, np.ones((CELL_PX, CELL_PX, 1), np.uint8))
        pixels[::CELL_PX], pixels[:, ::CELL_PX] = BORDER_RGB, BORDER_RGB  # each cell's outline, as in the browser
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="png")
        return buffer.getvalue()

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, self.board_png())


def render_iteration(images_IxHxWx3, resampled_IxN, i: int, *, title: str = "") -> PngFigure:
    """The image after iteration ``i`` (0 = the input) and the tokens resampled so far."""
    fig = PngFigure(figsize=(5.2, 2.8))
    ax_img, ax_mask = fig.subplots(1, 2)
    ax_img.imshow(images_IxHxWx3[i], interpolation="nearest")
    ax_img.set_title(f"{title} iteration {i}".strip(), fontsize=9)
    grid = int(round(np.sqrt(resampled_IxN.shape[-1])))
    touched = resampled_IxN[:i].any(axis=0) if i else np.zeros(resampled_IxN.shape[-1], bool)
    ax_mask.imshow(touched.reshape(grid, grid), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    ax_mask.set_title(f"resampled so far: {touched.mean():.0%}", fontsize=9)
    for ax in (ax_img, ax_mask):
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


class EditViewer:
    """An iteration slider over a mask-free edit: the input and each iteration's image, and the tokens resampled."""

    def __init__(self, images_IxHxWx3, resampled_IxN, *, title: str = ""):
        self.images = np.asarray(images_IxHxWx3)
        self.resampled = np.asarray(resampled_IxN)
        if len(self.images) != len(self.resampled) + 1:
            raise ValueError(f"images: expected the input plus one image per iteration "
                             f"({len(self.resampled) + 1}), got {len(self.images)}")
        self.title = title
        last = len(self.resampled)
        self.slider = widgets.IntSlider(description="iteration", min=0, max=last, value=last)
        self.image = widgets.Image(format="png")
        self._cache: dict[int, bytes] = {}
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        self.widget = widgets.VBox([self.slider, self.image])
        self.show(last)

    @classmethod
    def from_result(cls, result, index: int = 0, *, title: str = "") -> "EditViewer":
        """Decode every iteration of a :meth:`Pipeline.edit <muse_mini.pipeline.Pipeline.edit>` result once."""
        traj = result.base_trajectory
        tokens = np.concatenate([np.asarray(result.initial_tokens)[index][None], np.asarray(traj.tokens_BxIxN[index])])
        images = decode_tokens(result.tokenizer, tokens)  # one batch: the input and every iteration
        return cls(images, np.asarray(traj.resampled_BxIxN[index]), title=title or result.prompts[index])

    def show(self, i: int) -> None:
        if not 0 <= i <= len(self.resampled):
            raise ValueError(f"iteration: expected an integer in [0, {len(self.resampled)}], got {i}")
        if i not in self._cache:
            self._cache[i] = figure_to_png(render_iteration(self.images, self.resampled, i, title=self.title))
        self.iteration = i
        self.frame = self.images[i]
        show_png(self.image, self._cache[i])

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, self.image.value)
