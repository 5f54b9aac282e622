"""Decoding plots and widgets, headless, on a fake trajectory (no model calls)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from muse_mini.decoding.sampler import Trajectory  # noqa: E402
from IPython.core.formatters import DisplayFormatter  # noqa: E402

from muse_mini.viz.widgets import (  # noqa: E402
    DecodingViewer, PromptExplorer, figure_to_png, plot_trajectory_strip, render_step, trajectory_frames,
)

V, GRID, STEPS, CELL = 6, 4, 4, 2
N = GRID * GRID


def decode_tokens(tokens_N):
    """A fake VQGAN decoder: each token paints its 2×2 cell with colour 40·token."""
    cells_GxG = np.asarray(tokens_N).reshape(GRID, GRID) * 40
    image = np.kron(cells_GxG, np.ones((CELL, CELL), np.int64))
    return np.repeat(image[..., None], 3, -1).astype(np.uint8)


@pytest.fixture(scope="module")
def traj():
    """A hand-made two-example trajectory (the sampler's own tests check real ones)."""
    rng = np.random.default_rng(0)
    fixed_step_BxN = rng.permutation(np.arange(2 * N) % STEPS).reshape(2, N)
    fixed_step_BxN[0, :3] = -1  # given tokens, as in inpainting
    steps_T = np.arange(STEPS)[None, :, None]
    mask_BxTxN = fixed_step_BxN[:, None, :] > steps_T
    sampled_BxTxN = rng.integers(0, V, (2, STEPS, N))
    sampled_BxTxN = np.where(mask_BxTxN, sampled_BxTxN, sampled_BxTxN[:, -1:])
    masked_before = np.concatenate([fixed_step_BxN[:, None] >= 0, mask_BxTxN[:, :-1]], axis=1)
    confidence_BxTxN = np.where(masked_before, rng.normal(size=(2, STEPS, N)), np.inf)
    return Trajectory(
        tokens_BxTxN=np.where(mask_BxTxN, V, sampled_BxTxN), mask_BxTxN=mask_BxTxN,
        sampled_BxTxN=sampled_BxTxN, confidence_BxTxN=confidence_BxTxN.astype(np.float32),
        initial_mask_BxN=fixed_step_BxN >= 0, tokens_BxN=sampled_BxTxN[:, -1],
    )


@pytest.fixture(scope="module")
def frames(traj):
    return trajectory_frames(traj, decode_tokens, index=1)


def test_trajectory_frames_decode_each_step_and_grey_masked_cells(traj, frames):
    assert frames.shape == (STEPS, GRID * CELL, GRID * CELL, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[-1], decode_tokens(traj.tokens_BxN[1]))
    t, n = 0, int(np.flatnonzero(np.asarray(traj.mask_BxTxN[1, 0]))[0])
    row, col = divmod(n, GRID)
    raw = decode_tokens(traj.sampled_BxTxN[1, t])[row * CELL, col * CELL, 0]
    assert frames[t, row * CELL, col * CELL, 0] == np.uint8(0.3 * raw + 0.7 * 128)


def test_render_step_has_three_panels(traj, frames):
    fig = render_step(frames, traj, 1, index=1)
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    np.testing.assert_array_equal(panels[0].images[0].get_array(), frames[1])
    fig.canvas.draw()  # renders headless
    with pytest.raises(ValueError, match=r"t: expected a step in \[0, 4\)"):
        render_step(frames, traj, STEPS)


def test_render_step_displays_as_png_at_the_end_of_a_cell(traj, frames):
    """A notebook cell ending in render_step(...) shows a PNG, with no pyplot backend hook."""
    fig = render_step(frames, traj, 2, index=1)
    data, _ = DisplayFormatter().format(fig)
    assert data["image/png"].startswith(b"\x89PNG")
    data, _ = DisplayFormatter().format(plot_trajectory_strip(frames))
    assert data["image/png"].startswith(b"\x89PNG")


def test_step_numbers_count_from_one_in_titles(traj, frames):
    for t in range(STEPS):
        title = render_step(frames, traj, t, index=1).axes[0].get_title()
        assert title.startswith(f"step {t + 1}/{STEPS}:"), title
    strip = plot_trajectory_strip(frames, [0, 3])
    assert [ax.get_title() for ax in strip.axes] == ["step 1", f"step {STEPS}"]


def test_strip(frames):
    fig = plot_trajectory_strip(frames, [0, 2, 3])
    assert len([ax for ax in fig.axes if ax.images]) == 3
    with pytest.raises(ValueError, match="steps_to_show"):
        plot_trajectory_strip(frames, [7])


def test_viewer_slider_changes_the_frame(traj, frames):
    viewer = DecodingViewer(frames, traj, index=1)
    assert (viewer.slider.min, viewer.slider.max) == (1, STEPS)
    assert viewer.slider.value == STEPS and viewer.t == STEPS - 1
    last_png = viewer.image.value
    viewer.slider.value = 1
    np.testing.assert_array_equal(viewer.frame, frames[0])
    assert bytes(viewer.image.value) != bytes(last_png)
    assert bytes(viewer.image.value).startswith(b"\x89PNG")


def test_viewer_shows_its_png_at_the_png_s_pixel_size(traj, frames):
    """Not stretched to the page's width by its VBox, on every step."""
    import io

    from PIL import Image

    viewer = DecodingViewer(frames, traj, index=1)
    for step in (STEPS, 1):
        viewer.slider.value = step
        width, height = Image.open(io.BytesIO(viewer.image.value)).size
        assert (viewer.image.layout.width, viewer.image.layout.height) == (f"{width}px", "auto")


def test_viewer_slider_value_is_the_step_in_the_title(traj, frames):
    """Slider s shows the panel titled "step s/T" (it once showed "step s+1/T")."""
    viewer = DecodingViewer(frames, traj, index=1)
    for step in range(1, STEPS + 1):
        viewer.slider.value = step
        fig = render_step(frames, traj, step - 1, index=1)
        assert fig.axes[0].get_title().startswith(f"step {step}/{STEPS}:")
        assert bytes(viewer.image.value) == figure_to_png(fig)
        assert viewer.step == step
        np.testing.assert_array_equal(viewer.frame, frames[step - 1])
    with pytest.raises(ValueError, match=r"step: expected a step in \[1, 4\]"):
        viewer.show(0)


def test_prompt_explorer_calls_generate_and_refreshes(traj, frames):
    calls = []

    def generate_fn(prompt, guidance, steps):
        calls.append((prompt, guidance, steps))
        return (frames if len(calls) == 1 else frames[::-1].copy()), traj

    explorer = PromptExplorer(generate_fn, prompt="a red circle", guidance=2.0, steps=4)
    assert explorer.viewer is None and calls == []
    explorer.button.click()
    assert calls == [("a red circle", 2.0, 4)]
    np.testing.assert_array_equal(explorer.viewer.frame, frames[-1])
    explorer.prompt.value, explorer.guidance.value = "a blue square", 3.5
    explorer.button.click()
    assert calls[-1] == ("a blue square", 3.5, 4)
    np.testing.assert_array_equal(explorer.viewer.frame, frames[0])
    explorer.viewer.slider.value = 2  # step 2 is frames[1]
    np.testing.assert_array_equal(explorer.viewer.frame, frames[::-1][1])

    def failing(prompt, guidance, steps):
        raise ValueError("guidance: expected a finite guidance scale")

    broken = PromptExplorer(failing)
    broken.button.click()
    assert "guidance" in broken.status.value and broken.viewer is None
    assert not broken.button.disabled


def test_prompt_explorer_generates_on_enter_and_shows_it_is_busy(traj, frames):
    seen = []

    def generate_fn(prompt, guidance, steps):
        # What the browser shows while the sampler runs (and maybe recompiles).
        seen.append((prompt, explorer.button.disabled, explorer.status.value))
        return frames, traj

    explorer = PromptExplorer(generate_fn, prompt="a red circle", guidance=2.0, steps=4)
    assert explorer.prompt.continuous_update is False  # the value arrives on Enter, not per keystroke
    explorer.prompt.value = "a green triangle"  # what Enter in the box sends
    assert seen == [("a green triangle", True, "generating 'a green triangle'…")]
    assert not explorer.button.disabled
    assert explorer.status.value.startswith("'a green triangle': guidance 2, 4 steps")
    explorer.button.disabled = True  # a click while busy is ignored
    explorer._on_click(None)
    assert len(seen) == 1


def test_mask_painter_cells_show_their_colour_and_a_click_marks_them():
    """The board's colours must reach the browser: the cells' style has a synced ``button_color``
    (a ToggleButton's style has none, which left the board blank grey), and a click changes it."""
    from muse_mini.viz.edit_widgets import PRESSED_COLOUR, UNMARKED, MaskPainter

    image = np.full((32, 32, 3), 255, np.uint8)
    image[8:12, 4:8] = (255, 0, 0)  # token (2, 1) of the 8×8 grid is red
    painter = MaskPainter(image, 8)
    cell = painter.cells[2][1]
    assert "button_color" in cell.style.keys  # a synced trait, sent to the browser
    assert cell.style.button_color == "#ff0000" and painter.cells[0][0].style.button_color == "#ffffff"
    cell.click()
    assert cell.style.button_color == PRESSED_COLOUR and cell.description == "×"
    assert painter.token_mask[2, 1] and painter.token_mask.sum() == 1
    assert painter.mask[8:12, 4:8].all() and painter.mask.sum() == 16
    cell.click()
    assert cell.style.button_color == "#ff0000" and not painter.token_mask.any()
    # An empty description leaves the old "×" in the browser; unmarking must send a visible change.
    assert cell.description == UNMARKED and UNMARKED.strip() == "" and UNMARKED != ""
    assert cell.layout.border  # white cells on the white page need an outline
    painter.select([0, 7], [0, 7])
    painter.clear.click()
    assert not painter.token_mask.any() and painter.cells[7][7].style.button_color == "#ffffff"
    with pytest.raises(ValueError, match=r"image: expected a square"):
        MaskPainter(image[:, :30], 8)


def test_prompt_explorer_starts_at_the_samplers_steps_and_guidance(traj, frames):
    """The sliders start where the pipeline's sampler is (the paper's 24 steps by default), so the
    first click decodes as ``generate`` does."""
    from muse_mini.config import SamplerConfig

    calls = []
    explorer = PromptExplorer(lambda *args: calls.append(args) or (frames, traj), prompt="a red circle")
    assert (explorer.steps.value, explorer.guidance.value) == (SamplerConfig().steps, SamplerConfig().guidance) == (24, 4.0)
    pipeline_sampler = SamplerConfig(steps=12, guidance=1.5)
    explorer = PromptExplorer(lambda *args: calls.append(args) or (frames, traj), sampler=pipeline_sampler,
                              prompt="a red circle")
    explorer.button.click()
    assert calls == [("a red circle", 1.5, 12)]
    assert PromptExplorer(lambda *a: None, sampler=pipeline_sampler, steps=4).steps.value == 4
    with pytest.raises(ValueError, match=r"steps: expected 1 <= steps <= max_steps=48, got 64"):
        PromptExplorer(lambda *a: None, sampler=SamplerConfig(steps=64))
    with pytest.raises(ValueError, match=r"sampler: expected a SamplerConfig, got dict"):
        PromptExplorer(lambda *a: None, sampler={"steps": 24})


def _small_texts(fig, least: float = 8.0):
    """The visible, non-empty texts of ``fig`` under ``least`` points, as (text, size)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    return [(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() < least]


def test_every_text_in_the_viz_figures_is_at_least_8_points(traj, frames):
    """Grid titles, row labels, token ids, legends: none under 8 pt; a figure grows instead."""
    import matplotlib.pyplot as plt

    from muse_mini import viz
    from muse_mini.viz.edit_widgets import render_iteration

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    caption = "a large purple diamond in the bottom left, right of two small green squares"
    fig_tokens, axes = plt.subplots(1, 3, figsize=(9, 3))
    viz.token_map(rng.integers(0, 256, (8, 8)), ax=axes[1])
    viz.token_map(rng.integers(0, 256, (16, 16)), ax=axes[2])
    figures = {
        "image_grid": viz.image_grid(images, [caption] * 6, ncols=3, suptitle="generated"),
        "image_grid wrap=": viz.image_grid(images, [caption] * 6, ncols=6, size=1.0, wrap=30),
        "side_by_side": viz.side_by_side({"base 32×32": images[:3], "the tokenizer's decoder": images[:3]},
                                         [caption] * 3),
        "token_map 16×16": viz.token_map(rng.integers(0, 1024, (16, 16))).figure,
        "token_map in subplots": fig_tokens,
        "inpaint_steps": viz.inpaint_steps(traj, frames=frames, index=1),
        "plot_metrics": viz.plot_metrics({"step": np.arange(5), "loss": np.ones(5)}).figure,
        "render_iteration": render_iteration(images, np.zeros((5, 16), bool), 2, title=caption),
        "render_step": render_step(frames, traj, 1, index=1),
        "strip": plot_trajectory_strip(frames),
    }
    for name, fig in figures.items():
        assert not _small_texts(fig), f"{name}: texts under 8 pt: {_small_texts(fig)[:3]}"
    assert _small_texts(figures["image_grid"], least=8.01) and _small_texts(figures["side_by_side"], least=8.01)
    assert len(fig_tokens.axes[1].texts) == 64  # the 8×8 ids still fit a 9-inch row of three panels
    plt.close("all")


def test_token_map_numbers_fit_their_cells_or_are_left_out():
    """At 8 pt, each id must fit its cell: the figure grows (up to a page's width unless numbers=True);
    a map that would need a wider figure is drawn in colours only."""
    import matplotlib.pyplot as plt

    from muse_mini import viz
    from muse_mini.viz.figures import PAGE_WIDTH

    ids = np.random.default_rng(1).integers(100, 256, (16, 16))  # three digits everywhere

    def widest_text_and_cell(ax):
        fig = ax.figure
        fig.tight_layout()
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        return max(t.get_window_extent(renderer).width for t in ax.texts), ax.get_window_extent(renderer).width / 16

    alone = viz.token_map(ids)
    text_px, cell_px = widest_text_and_cell(alone)
    assert len(alone.texts) == 256 and text_px < cell_px
    _, axes = plt.subplots(1, 2, figsize=(6, 3))
    grown = viz.token_map(ids, ax=axes[1], numbers=True)
    text_px, cell_px = widest_text_and_cell(grown)
    assert grown.figure.get_size_inches()[0] > 6 and text_px < cell_px
    _, axes = plt.subplots(1, 2, figsize=(6, 3))
    auto = viz.token_map(ids, ax=axes[1])
    assert not auto.texts and auto.figure.get_size_inches()[0] <= PAGE_WIDTH
    assert not viz.token_map(ids[:4, :4], numbers=False).texts
    with pytest.raises(ValueError, match="ids_HxW: expected a 2-D map"):
        viz.token_map(ids.ravel())
    plt.close("all")


def test_edit_viewer_shows_its_png_at_the_png_s_pixel_size():
    """A VBox stretches an image widget to the page's width (416×224 shown at 964×519): the layout must
    give the PNG's own size, on every frame."""
    import io

    from PIL import Image

    from muse_mini.viz.edit_widgets import EditViewer
    from muse_mini.viz.widgets import png_size

    images = np.random.default_rng(2).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    viewer = EditViewer(images, np.eye(3, 16, dtype=bool), title="a red circle")
    for i in (3, 0, 2):
        viewer.slider.value = i
        width, height = Image.open(io.BytesIO(viewer.image.value)).size
        assert png_size(viewer.image.value) == (width, height)
        assert (viewer.image.layout.width, viewer.image.layout.height) == (f"{width}px", "auto")
    with pytest.raises(ValueError, match="png: expected the bytes of a PNG"):
        png_size(b"GIF89a" + bytes(30))


def test_mask_overlay_shows_the_mask_on_white_and_on_every_shapes_colour():
    from muse_mini.data.captions import COLOURS
    from muse_mini.viz.figures import mask_overlay

    colours = [(255, 255, 255), *COLOURS.values()]
    image = np.repeat(np.array(colours, np.uint8), 8, axis=0)[:, None].repeat(64, axis=1)  # a band per colour
    mask = np.zeros(image.shape[:2], bool)
    mask[:, 16:48] = True
    shown = mask_overlay(image, mask)
    assert shown.dtype == np.uint8
    np.testing.assert_array_equal(shown[~mask], image[~mask])
    for k, colour in enumerate(colours):
        inside = shown[k * 8:(k + 1) * 8, 16:48].reshape(-1, 3).astype(int)
        # every masked pixel moves well away from the colour under it
        assert (np.abs(inside - colour).sum(-1) > 60).all(), colour
    with pytest.raises(ValueError, match="mask_HxW: expected a mask of the image's"):
        mask_overlay(image, mask[:, :10])


def test_token_states_and_inpaint_steps_follow_the_trajectory(traj, frames):
    """Each token after each step: the input's (never touched), fixed earlier, fixed now, still masked."""
    import matplotlib.pyplot as plt

    from muse_mini import viz
    from muse_mini.viz.figures import TOKEN_STATES, token_states

    states_TxN = token_states(traj, index=0)
    fixed_step_N = np.asarray(traj.fixed_step_BxN[0])
    assert states_TxN.shape == (STEPS, N)
    for t in range(STEPS):
        np.testing.assert_array_equal(states_TxN[t, :3], 0)  # given tokens, as in inpainting
        np.testing.assert_array_equal(states_TxN[t] == 3, np.asarray(traj.mask_BxTxN[0, t]))
        np.testing.assert_array_equal(states_TxN[t] == 2, (fixed_step_N == t))
        np.testing.assert_array_equal(states_TxN[t] == 1, (fixed_step_N >= 0) & (fixed_step_N < t))
    fig = viz.inpaint_steps(traj, [0, 3], frames=frames, index=0)
    maps = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape == (GRID, GRID)]
    assert len(maps) == 2
    np.testing.assert_array_equal(maps[1].images[0].get_array(), states_TxN[3].reshape(GRID, GRID))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [name for name, _ in TOKEN_STATES]
    with pytest.raises(ValueError, match=r"steps: expected steps in \[0, 4\)"):
        viz.inpaint_steps(traj, [4])
    plt.close("all")


def test_widgets_display_a_still_png_beside_the_live_widget(traj, frames):
    """A page with no widget manager (the docs site) shows the bundle's image/png: it must be exactly the frame the
    live widget shows, follow the slider, and the live view must still be there for JupyterLab."""
    import base64
    import io

    from PIL import Image

    from muse_mini.viz.edit_widgets import PRESSED_COLOUR, EditViewer, MaskPainter

    viewer = DecodingViewer(frames, traj)
    viewer.slider.value = 2
    data, _ = DisplayFormatter().format(viewer)
    assert "application/vnd.jupyter.widget-view+json" in data
    assert base64.b64decode(data["image/png"]) == viewer.image.value == figure_to_png(render_step(frames, traj, 1))

    edit = EditViewer(np.zeros((3, 8, 8, 3), np.uint8), np.eye(2, 16, dtype=bool))
    edit.slider.value = 1
    assert base64.b64decode(DisplayFormatter().format(edit)[0]["image/png"]) == edit.image.value

    explorer = PromptExplorer(lambda prompt, guidance, steps: (frames, traj))
    still = DisplayFormatter().format(explorer)[0]
    assert "image/png" not in still and "Generate" in still["text/plain"]  # nothing generated yet: say what it is
    explorer.generate()
    assert base64.b64decode(DisplayFormatter().format(explorer)[0]["image/png"]) == explorer.viewer.image.value

    image = np.full((32, 32, 3), 255, np.uint8)
    image[8:12, 4:8] = (255, 0, 0)  # token (2, 1) of the 8×8 grid is red
    painter = MaskPainter(image, 8)
    painter.select([7], [7])
    board = np.asarray(Image.open(io.BytesIO(base64.b64decode(DisplayFormatter().format(painter)[0]["image/png"]))))
    cell = board.shape[0] // 8
    assert board.shape[:2] == (8 * cell, 8 * cell)
    centre = lambda r, c: tuple(board[r * cell + cell // 2, c * cell + cell // 2, :3])  # noqa: E731
    assert centre(2, 1) == (255, 0, 0) and centre(0, 0) == (255, 255, 255)
    assert centre(7, 7) == tuple(int(PRESSED_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
