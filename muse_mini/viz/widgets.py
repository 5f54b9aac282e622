"""Watching iterative decoding (Muse §2.8, Figure 5): plots and notebook widgets.

Everything works from a precomputed trajectory and the decoded image of every
step, so a slider only indexes arrays. Figures are built without pyplot (they
run headless and display as PNG whatever the backend). Steps are counted from
1 where a person reads them, as in Figure 5: step ``t + 1`` is ``frames[t]``.
"""

from __future__ import annotations

import base64
import io
import math
import time
from typing import Callable

import ipywidgets as widgets
import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from muse_mini.config import SamplerConfig

GREY = 128


def _one(traj, index: int) -> dict:
    """The trajectory of example ``index`` as NumPy arrays (T leading)."""
    B = np.shape(traj.tokens_BxTxN)[0]
    if not -B <= index < B:
        raise ValueError(f"index: expected an example index in [0, {B}), got {index}")
    return {
        "sampled_TxN": np.asarray(traj.sampled_BxTxN[index]),
        "mask_TxN": np.asarray(traj.mask_BxTxN[index]),
        "confidence_TxN": np.asarray(traj.confidence_BxTxN[index]),
        "fixed_step_N": np.asarray(traj.fixed_step_BxN[index]),
    }


def _grid(num_tokens: int) -> int:
    grid = math.isqrt(num_tokens)
    if grid * grid != num_tokens:
        raise ValueError(f"trajectory: {num_tokens} tokens do not form a square grid")
    return grid


def _as_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"decode_tokens: expected an HxWx3 image, got shape {image.shape}")
    if image.dtype != np.uint8:  # float images are taken to lie in [0, 1]
        image = np.clip(np.rint(image.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    return image


def trajectory_frames(traj, decode_tokens: Callable, index: int = 0, *, grey: float = 0.7):
    """Every step of example ``index`` decoded once (uint8 ``TxHxWx3``): the step's full prediction,
    with still-masked cells blended ``grey`` towards grey so the committed tokens stand out."""
    one = _one(traj, index)
    frames = np.stack([_as_uint8(decode_tokens(tokens_N)) for tokens_N in one["sampled_TxN"]])
    T, H, W, _ = frames.shape
    grid = _grid(one["mask_TxN"].shape[-1])
    if H % grid or W % grid:
        raise ValueError(f"decode_tokens: image size {(H, W)} is not a multiple of the {grid}×{grid} grid")
    # Each token's cell is an (H/grid)×(W/grid) patch of pixels.
    mask_TxHxW = np.kron(one["mask_TxN"].reshape(T, grid, grid), np.ones((H // grid, W // grid), bool))
    blended = (1 - grey) * frames + grey * GREY
    return np.where(mask_TxHxW[..., None], blended, frames).astype(np.uint8)


class PngFigure(Figure):
    """A pyplot-free figure that IPython displays as a PNG (no backend registers a hook for it)."""

    def _repr_png_(self) -> bytes:
        return figure_to_png(self)


def _cell_marks(ax, cells_GxG, color="red"):
    rows, cols = np.nonzero(cells_GxG)
    ax.scatter(cols, rows, marker="s", s=30, facecolors="none", edgecolors=color, linewidths=1.2)


def render_step(frames, traj, t: int, index: int = 0) -> PngFigure:
    """Step ``t + 1``: the image; the step that fixed each token (red squares: fixed now); the
    score ranked at this step (log p + annealed Gumbel noise)."""
    one = _one(traj, index)
    T, N = one["mask_TxN"].shape
    if not 0 <= t < T:
        raise ValueError(f"t: expected a step in [0, {T}), got {t}")
    grid = _grid(N)
    fixed_step_GxG = one["fixed_step_N"].reshape(grid, grid)
    newly_fixed_GxG = fixed_step_GxG == t

    fig = PngFigure(figsize=(11, 3.6), layout="constrained")
    ax_img, ax_fix, ax_conf = fig.subplots(1, 3)
    ax_img.imshow(np.asarray(frames[t]))
    ax_img.set_title(f"step {t + 1}/{T}: {int(one['mask_TxN'][t].sum())} still masked")

    cmap, norm = matplotlib.colormaps["viridis"], Normalize(0, max(T - 1, 1))
    rgba_GxGx4 = cmap(norm(fixed_step_GxG))
    rgba_GxGx4[fixed_step_GxG > t] = (1.0, 1.0, 1.0, 1.0)
    rgba_GxGx4[fixed_step_GxG < 0] = (0.8, 0.8, 0.8, 1.0)
    ax_fix.imshow(rgba_GxGx4)
    _cell_marks(ax_fix, newly_fixed_GxG)
    ax_fix.set_title(f"fixed at step (red: {int(newly_fixed_GxG.sum())} at step {t + 1})")
    colorbar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax_fix, label="step fixed")
    # The colour scale is over 0-based indices; label its ticks as the steps the titles show.
    colorbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v + 1:g}"))

    conf_GxG = one["confidence_TxN"][t].reshape(grid, grid).astype(np.float64)
    conf_GxG[~np.isfinite(conf_GxG)] = np.nan
    conf_cmap = matplotlib.colormaps["magma"].with_extremes(bad=(0.8, 0.8, 0.8))
    im = ax_conf.imshow(conf_GxG, cmap=conf_cmap)
    _cell_marks(ax_conf, newly_fixed_GxG, color="cyan")
    ax_conf.set_title("confidence at this step")
    fig.colorbar(im, ax=ax_conf, label="log p + noise")
    for ax in (ax_img, ax_fix, ax_conf):
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot_trajectory_strip(frames, steps_to_show=None) -> PngFigure:
    """One row of decoded frames at 0-based ``steps_to_show`` (default: all), titled from step 1, as in Figure 5."""
    frames = np.asarray(frames)
    steps = list(range(len(frames))) if steps_to_show is None else [int(s) for s in steps_to_show]
    if not steps or any(not 0 <= s < len(frames) for s in steps):
        raise ValueError(f"steps_to_show: expected steps in [0, {len(frames)}), got {steps}")
    fig = PngFigure(figsize=(1.6 * len(steps), 1.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(steps)))
    for ax, s in zip(axes, steps):
        ax.imshow(frames[s])
        ax.set_title(f"step {s + 1}", fontsize=9)
        ax.axis("off")
    return fig


def figure_to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (what the viewer's image widget and ``_repr_png_`` show)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels, from a PNG's header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("png: expected the bytes of a PNG image")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def show_png(image: widgets.Image, png: bytes) -> None:
    """Show ``png`` at its own width (a VBox otherwise stretches it to the page's), its height following, so a
    narrower page scales it down without distorting it."""
    image.value = png
    image.layout.width, image.layout.height = f"{png_size(png)[0]}px", "auto"


def widget_bundle(widget: widgets.Widget, png: bytes | None, text: str | None = None) -> dict:
    """``widget``'s display data plus a still PNG of what it shows: a live notebook renders the widget, a page
    without a widget manager (the docs site, an exported notebook) the picture, or ``text`` when there is none."""
    bundle = dict(widget._repr_mimebundle_())
    if text is not None:
        bundle["text/plain"] = text
    if png is not None:
        bundle["image/png"] = base64.b64encode(png).decode("ascii")
    return bundle


class DecodingViewer:
    """A step slider (1..T) over :func:`trajectory_frames` and the trajectory; ``step``, ``t = step - 1``
    and ``frame`` are what it shows."""

    def __init__(self, frames, traj, index: int = 0):
        self.slider = widgets.IntSlider(description="step", min=1, max=1, value=1,
                                        continuous_update=True)
        self.image = widgets.Image(format="png")
        self.widget = widgets.VBox([self.slider, self.image])
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        self.update(frames, traj, index)

    def update(self, frames, traj, index: int = 0) -> None:
        """Show a new decoding (e.g. after :class:`PromptExplorer` generated one)."""
        self.frames = np.asarray(frames)
        self.traj = traj
        self.index = index
        self._png_cache: dict[int, bytes] = {}
        T = self.frames.shape[0]
        if np.shape(traj.tokens_BxTxN)[1] != T:
            raise ValueError(
                f"frames: expected one frame per step ({np.shape(traj.tokens_BxTxN)[1]}), got {T}"
            )
        with self.slider.hold_trait_notifications():
            self.slider.max = T
            self.slider.value = T
        self.show(T)

    def show(self, step: int) -> None:
        """Show step ``step`` (1..T, as on the slider and in the titles)."""
        T = self.frames.shape[0]
        if not 1 <= step <= T:
            raise ValueError(f"step: expected a step in [1, {T}], got {step}")
        t = step - 1
        if t not in self._png_cache:
            self._png_cache[t] = figure_to_png(render_step(self.frames, self.traj, t, self.index))
        self.step, self.t = step, t
        self.frame = self.frames[t]
        show_png(self.image, self._png_cache[t])

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, self.image.value)


class PromptExplorer:
    """Prompt box, guidance and steps sliders, a button and a :class:`DecodingViewer` over
    ``generate_fn(prompt, guidance, steps) -> (frames, traj)``; the button is disabled while it runs.

    The sliders start at ``sampler``'s guidance and steps (pass the pipeline's ``cfg.sampler``;
    default :class:`~muse_mini.config.schema.SamplerConfig`, the paper's 24 steps, §2.8) unless given.
    """

    def __init__(self, generate_fn: Callable, *, sampler: SamplerConfig | None = None, prompt: str = "",
                 guidance: float | None = None, steps: int | None = None, max_guidance: float = 10.0,
                 max_steps: int = 48):
        if sampler is not None and not isinstance(sampler, SamplerConfig):
            raise ValueError(f"sampler: expected a SamplerConfig, got {type(sampler).__name__}")
        sampler = sampler or SamplerConfig()
        guidance = sampler.guidance if guidance is None else guidance
        steps = sampler.steps if steps is None else steps
        if not 1 <= steps <= max_steps:
            raise ValueError(f"steps: expected 1 <= steps <= max_steps={max_steps}, got {steps}")
        if not 0.0 <= guidance <= max_guidance:
            raise ValueError(f"guidance: expected 0 <= guidance <= max_guidance={max_guidance}, got {guidance}")
        self.generate_fn = generate_fn
        # continuous_update=False: the value reaches the kernel on Enter (or
        # leaving the box), not on every keystroke, so observing it is "submit".
        self.prompt = widgets.Text(value=prompt, description="prompt", continuous_update=False,
                                   layout=widgets.Layout(width="60%"))
        self.guidance = widgets.FloatSlider(description="guidance", value=guidance, min=0.0,
                                            max=max_guidance, step=0.25)
        self.steps = widgets.IntSlider(description="steps", value=steps, min=1, max=max_steps)
        self.button = widgets.Button(description="Generate", button_style="primary")
        self.status = widgets.Label(value="")
        self.viewer: DecodingViewer | None = None
        self.button.on_click(self._on_click)
        self.prompt.observe(self._on_click, names="value")
        controls = widgets.HBox([self.prompt, self.button])
        self.widget = widgets.VBox([controls, self.guidance, self.steps, self.status])

    def generate(self):
        """Run ``generate_fn`` with the current controls and show the result."""
        prompt, guidance, steps = self.prompt.value, float(self.guidance.value), int(self.steps.value)
        start = time.perf_counter()
        frames, traj = self.generate_fn(prompt, guidance, steps)
        elapsed = time.perf_counter() - start
        if self.viewer is None:
            self.viewer = DecodingViewer(frames, traj)
            self.widget.children = (*self.widget.children, self.viewer.widget)
        else:
            self.viewer.update(frames, traj)
        self.status.value = f"{prompt!r}: guidance {guidance:g}, {steps} steps, {elapsed:.2f} s"
        return frames, traj

    def _on_click(self, _event) -> None:
        """Button click or Enter: generate, showing that work is under way."""
        if self.button.disabled:  # already generating
            return
        self.button.disabled = True
        self.status.value = f"generating {self.prompt.value!r}…"
        # A callback's exception would vanish into the widget log; show it instead.
        try:
            self.generate()
        except Exception as error:  # noqa: BLE001
            self.status.value = f"error: {type(error).__name__}: {error}"
        finally:
            self.button.disabled = False

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, self.viewer.image.value if self.viewer else None,
                             "PromptExplorer: a prompt box, guidance and steps sliders and a Generate button "
                             "(they work when the notebook runs in Jupyter)")
