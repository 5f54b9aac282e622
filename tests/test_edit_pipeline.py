"""Editing through the pipeline (§3.3): invariants on a smoke-trained pipeline, bad inputs, the CLI, widgets.

The smoke models are barely trained, so these tests check what must hold
whatever the weights: kept tokens keep their ids, outputs have the promised
sizes, every error names its argument. ``scripts/eval_editing.py`` measures
how well trained models edit.
"""

import re

import numpy as np
import pytest
from PIL import Image

from muse_mini.cli import main
from muse_mini.data import shapes
from muse_mini.config import EditConfig, from_dict
from muse_mini.decoding.editing import pixel_mask_to_token_mask
from muse_mini.editing.outpaint import window_starts
from muse_mini.models.codec import encode_images, reconstruct
from muse_mini.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipe(smoke_runs):
    return Pipeline.from_run(smoke_runs / "smoke")


@pytest.fixture(scope="module")
def scene():
    """A two-object relation scene at 64×64 and its 32×32 decimation, and a box mask over object 0."""
    images, _, scenes = shapes.generate(1, seed=123, split="train", kinds=("relation",))
    x0, y0, x1, y1 = scenes[0].objects[0].box
    mask = np.zeros((64, 64), bool)
    mask[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = True
    return images[0], shapes.downsample(images[0]), mask, mask.reshape(32, 2, 32, 2).any(axis=(1, 3))


def _tokens(vqgan, image):
    return encode_images(vqgan, image[None]).reshape(1, -1)


def test_inpaint_keeps_every_token_outside_the_mask(pipe, scene):
    _, low, _, low_mask = scene
    result = pipe.inpaint(low, low_mask, "a green circle left of a red square", seed=1)
    assert result.images.shape == (1, 64, 64, 3) and result.base_images.shape == (1, 32, 32, 3)
    token_mask = np.asarray(pixel_mask_to_token_mask(low_mask, pipe.tokenizer.grid))
    np.testing.assert_array_equal(result.token_mask[0], token_mask)
    before, after = _tokens(pipe.tokenizer, low)[0], np.asarray(result.base_trajectory.tokens_BxN)[0]
    assert 0 < token_mask.sum() < token_mask.size
    np.testing.assert_array_equal(after[~token_mask], before[~token_mask])
    assert (np.asarray(result.base_trajectory.tokens_BxN) < pipe.base.mask_id).all()  # everything decided


def test_multiscale_inpaint_keeps_tokens_outside_the_mask_at_both_sizes(pipe, scene):
    high, low, mask, low_mask = scene
    result = pipe.inpaint(high, mask, "a green circle left of a red square", seed=2)
    assert result.images.shape == (1, 64, 64, 3)
    low_tokens = np.asarray(pixel_mask_to_token_mask(low_mask, pipe.tokenizer.grid))
    kept = _tokens(pipe.tokenizer, low)[0][~low_tokens]
    np.testing.assert_array_equal(np.asarray(result.base_trajectory.tokens_BxN)[0][~low_tokens], kept)
    hr_mask = np.asarray(pixel_mask_to_token_mask(mask, pipe.highres_tokenizer.grid))
    hr_before = _tokens(pipe.highres_tokenizer, high)[0]
    hr_after = np.asarray(result.superres_trajectory.tokens_BxN)[0]
    np.testing.assert_array_equal(hr_after[~hr_mask], hr_before[~hr_mask])
    assert (result.superres_trajectory.initial_mask_BxN[0] == hr_mask).all()


def test_one_mask_and_image_are_shared_by_a_batch_of_prompts(pipe, scene):
    _, low, _, low_mask = scene
    result = pipe.inpaint(low, low_mask, ["a red circle", "a blue square", "a green diamond"], stage="base")
    assert result.images.shape == (3, 32, 32, 3) and result.prompts[1] == "a blue square"
    token_mask = np.asarray(pixel_mask_to_token_mask(low_mask, 8))
    np.testing.assert_array_equal(result.token_mask, np.tile(token_mask, (3, 1)))  # one mask, every row
    np.testing.assert_array_equal(result.base_trajectory.initial_mask_BxN, result.token_mask)


@pytest.mark.parametrize("extend, by, shape", [("right", 16, (1, 32, 48, 3)), ("left", 6, (1, 32, 38, 3)),
                                               ("down", 40, (1, 72, 32, 3)), ("up", 4, (1, 36, 32, 3))])
def test_outpaint_past_the_frame_grows_it_by_exactly_by_pixels(pipe, scene, extend, by, shape):
    _, low, _, _ = scene
    result = pipe.outpaint(low, "a red circle left of a blue square", extend=extend, by=by, stage="base")
    assert result.images.shape == shape
    # the input's tokens are where the first window found them, unchanged
    grid, by_tokens = pipe.tokenizer.grid, -(-by // 4)
    first = np.asarray(result.base_trajectory[0].tokens_BxN).reshape(grid, grid)
    original = _tokens(pipe.tokenizer, low).reshape(grid, grid)
    start = window_starts(grid + by_tokens, grid, extend in ("right", "down"))[0]
    origin = 0 if extend in ("right", "down") else by_tokens
    overlap = slice(max(start, origin), min(start, origin) + grid)
    window = (slice(None), slice(overlap.start - start, overlap.stop - start))
    source = (slice(None), slice(overlap.start - origin, overlap.stop - origin))
    if extend in ("up", "down"):
        window, source = window[::-1], source[::-1]
    np.testing.assert_array_equal(first[window], original[source])


def test_outpaint_through_superres_and_inside_the_frame(pipe, scene):
    high, low, mask, low_mask = scene
    wide = pipe.outpaint(low, "a red circle left of a blue square", extend="right", by=16)
    assert wide.images.shape == (1, 64, 96, 3) and wide.base_images.shape == (1, 32, 48, 3)
    framed = pipe.outpaint(high, "a red circle", keep=~mask, seed=3)
    assert framed.images.shape == (1, 64, 64, 3)
    low_tokens = np.asarray(pixel_mask_to_token_mask(low_mask, pipe.tokenizer.grid))
    np.testing.assert_array_equal(framed.token_mask[0], low_tokens)


def test_paste_back_keeps_the_input_pixels_outside_the_mask_and_nothing_else_changes(pipe, scene):
    high, low, mask, low_mask = scene
    prompt = "a green circle left of a red square"
    raw = pipe.inpaint(high, mask, prompt, seed=7)
    kept = pipe.inpaint(high, mask, prompt, seed=7, paste_back=True)
    np.testing.assert_array_equal(kept.images[0][~mask], high[~mask])  # exact outside the mask, both sizes
    np.testing.assert_array_equal(kept.base_images[0][~low_mask], low[~low_mask])
    np.testing.assert_array_equal(kept.images[0][mask], raw.images[0][mask])  # the edit itself is the same
    np.testing.assert_array_equal(kept.base_images[0][low_mask], raw.base_images[0][low_mask])
    assert (raw.images[0][~mask] != high[~mask]).any()  # without it the decoder's output differs
    from muse_mini.evaluation.editing_tasks import Case, pasted
    np.testing.assert_array_equal(pasted(raw.images, [Case(high, mask, prompt)]), kept.images)
    np.testing.assert_array_equal(pasted(raw.base_images, [Case(high, mask, prompt)]), kept.base_images)
    wide = pipe.outpaint(low, prompt, extend="left", by=8, stage="base", paste_back=True)
    np.testing.assert_array_equal(wide.images[0][:, 8:], low)  # the input sits at the right, exactly
    with pytest.raises(ValueError, match=r"paste_back: the image is 32×32 but the super-res output is 64×64"):
        pipe.inpaint(low, low_mask, prompt, stage="superres", paste_back=True)
    with pytest.raises(ValueError, match=r"paste_back: expected True or False"):
        pipe.inpaint(low, low_mask, prompt, paste_back="yes")


@pytest.mark.parametrize("start_total", [(8, 8), (8, 9), (8, 12), (8, 13), (8, 40), (16, 23)])
def test_windows_cover_the_canvas_and_overlap_by_half(start_total):
    window, total = start_total
    for toward_end in (True, False):
        starts = window_starts(total, window, toward_end, cover_all=True)
        covered = np.zeros(total, bool)
        for s in starts:
            assert 0 <= s <= total - window
            covered[s:s + window] = True
        assert covered.all()
        ordered = starts if toward_end else starts[::-1]
        assert all(b - a <= window // 2 for a, b in zip(ordered, ordered[1:]))


def test_mask_free_edit_keeps_every_iteration_and_resamples_8_percent(pipe, scene):
    _, low, _, _ = scene
    result = pipe.edit(low, "a blue circle left of a red square", iterations=6, seed=4)
    traj = result.base_trajectory
    assert traj.tokens_BxIxN.shape == (1, 6, 64) and result.images.shape == (1, 64, 64, 3)
    assert (np.asarray(traj.resampled_BxIxN).sum(-1) == round(0.08 * 64)).all()
    tokens = np.concatenate([result.initial_tokens[:, None], np.asarray(traj.tokens_BxIxN)], axis=1)
    changed = tokens[:, 1:] != tokens[:, :-1]
    assert not (changed & ~np.asarray(traj.resampled_BxIxN)).any()  # only resampled tokens move
    np.testing.assert_array_equal(result.initial_tokens, _tokens(pipe.tokenizer, low))
    np.testing.assert_array_equal(result.iteration_images(0), reconstruct(pipe.tokenizer, low[None]))
    assert result.iteration_images(6).shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(result.iteration_images(6), result.base_images)
    with pytest.raises(ValueError, match=r"iteration: expected an integer in \[0, 6\]"):
        result.iteration_images(7)


@pytest.mark.parametrize("call, message", [
    (lambda p, im, m: p.inpaint(np.zeros((48, 48, 3), np.uint8), m, "x"), r"image: expected 32×32 or 64×64"),
    (lambda p, im, m: p.inpaint(im.astype(np.float32), m, "x"), r"image: expected uint8"),
    (lambda p, im, m: p.inpaint(im, np.ones((64, 64), bool), "x"), r"mask: its 64×64 pixels do not match"),
    (lambda p, im, m: p.inpaint(im, np.zeros((32, 32), bool), "x"), r"mask: no pixel is marked"),
    (lambda p, im, m: p.inpaint(im, np.ones((32, 32), bool), "x"), r"mask: covers every token"),
    (lambda p, im, m: p.inpaint(im, m.astype(np.float32), "x"), r"mask: expected a boolean"),
    (lambda p, im, m: p.inpaint(im, m, ""), r"prompt: expected a non-empty string"),
    (lambda p, im, m: p.inpaint([im, im], [m, m, m], "x"), r"image, mask, prompt: expected equal counts"),
    (lambda p, im, m: p.edit(im, "x", iterations=0), r"edit.iterations: expected an integer >= 1"),
    (lambda p, im, m: p.edit(im, "x", resample_fraction=1.5), r"edit.resample_fraction: expected .* <= 1.0, got 1.5"),
    (lambda p, im, m: p.edit(im, "x", resample_fraction=0), r"resample_fraction"),
    (lambda p, im, m: p.edit(im, "x", guidance=float("nan")), r"edit.guidance: expected a finite number"),
    (lambda p, im, m: p.edit(im, "x", top_k=300), r"top_k: expected 1 <= top_k <= vocab size 256"),
    (lambda p, im, m: p.edit(im, "x", steps=3), r"unknown editing settings \['steps'\]"),
    (lambda p, im, m: p.edit(im, "x", seed=-1), r"seed: expected an integer seed in \[0, 2\*\*32\)"),
    (lambda p, im, m: p.outpaint(im, "x", extend="sideways", by=8), r"extend: expected one of"),
    (lambda p, im, m: p.outpaint(im, "x", extend="left", by=0), r"by: expected a positive number"),
    (lambda p, im, m: p.outpaint(im, "x", extend="right", by=100000), r"by: expected at most 96 pixels .* got 100000"),
    (lambda p, im, m: p.outpaint(im, "x"), r"keep, extend: give keep="),
    (lambda p, im, m: p.inpaint("no/such.png", m, "x"), r"image: no image file"),
    (lambda p, im, m: p.inpaint(im, None, "x"), r"mask: expected a boolean \(H, W\) array, or a PNG .* got None"),
    (lambda p, im, m: p.inpaint(np.kron(im, np.ones((2, 2, 1), np.uint8)), None, "x"), r"mask: .* got None"),
])
def test_bad_inputs_name_the_argument(pipe, scene, call, message):
    _, low, _, low_mask = scene
    with pytest.raises(ValueError, match=message):
        call(pipe, low, low_mask)


def test_cli_edit_inpaint_outpaint_and_mask_free(smoke_runs, scene, tmp_path, capsys):
    high, low, mask, low_mask = scene
    run = str(smoke_runs / "smoke")
    Image.fromarray(low).save(tmp_path / "in.png")
    Image.fromarray(high).save(tmp_path / "in64.png")
    Image.fromarray((low_mask * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "mask64.png")
    base = ["edit", "--run", run, "--prompt", "a red circle left of a blue square"]
    cases = [(["--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--stage", "base"], (32, 32)),
             (["--image", str(tmp_path / "in64.png"), "--mask", str(tmp_path / "mask64.png")], (64, 64)),
             (["--image", str(tmp_path / "in.png"), "--extend", "right", "--by", "8", "--stage", "base"], (32, 40)),
             (["--image", str(tmp_path / "in.png"), "--mode", "outpaint", "--mask", str(tmp_path / "mask.png")],
              (32, 32)),  # the output keeps the input's size
             (["--image", str(tmp_path / "in.png"), "--iterations", "3", "--seed", "5"], (32, 32)),
             (["--image", str(tmp_path / "in64.png"), "--iterations", "3", "--seed", "5"], (64, 64)),
             (["--image", str(tmp_path / "in.png"), "--extend", "right", "--by", "8"], (64, 80)),
             (["--image", str(tmp_path / "in64.png"), "--mask", str(tmp_path / "mask64.png"), "--paste-back"],
              (64, 64))]
    for i, (args, hw) in enumerate(cases):
        out = tmp_path / "out" / f"{i}.png"
        assert main([*base, *args, "--out", str(out)]) == 0, capsys.readouterr().err
        assert np.asarray(Image.open(out)).shape == (*hw, 3)
    pasted = np.asarray(Image.open(tmp_path / "out" / f"{len(cases) - 1}.png"))
    np.testing.assert_array_equal(pasted[~mask], high[~mask])


@pytest.mark.parametrize("args, message", [
    (["--mode", "inpaint"], "--mask: --mode inpaint needs a mask"),
    (["--mode", "outpaint"], "--extend: --mode outpaint needs"),
    (["--extend", "left"], "--by: --extend DIRECTION and --by PIXELS go together"),
    (["--iterations", "0"], "edit.iterations: expected an integer >= 1"),
    (["--resample-fraction", "2"], "edit.resample_fraction: expected a finite number > 0.0 and <= 1.0"),
    (["--seed", str(2**70)], "--seed: expected an integer seed in [0, 2**32)"),
    (["--seed", "-1"], "--seed: expected an integer seed in [0, 2**32)"),
    (["--extend", "right", "--by", "100000"], "by: expected at most 96 pixels"),
    (["--extend", "right", "--by", "0"], "by: expected a positive number of pixels"),
    (["--image", __file__], "is not a readable image"),
    (["--paste-back"], "--paste-back: --mode mask-free regenerates every pixel"),
    (["--out-dir"], None),
])
def test_cli_edit_rejects_bad_flags_before_loading(tmp_path, capsys, args, message):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "in.png")
    argv = ["edit", "--run", str(tmp_path / "none"), "--image", str(tmp_path / "in.png"), "--prompt", "x"]
    if message is None:  # --out is a directory, or has no image suffix
        (tmp_path / "d").mkdir()
        for out, expected in ((tmp_path / "d", "--out: .* is a directory"), (tmp_path / "x.txt", "--out: expected a file")):
            assert main([*argv, "--out", str(out)]) == 2
            assert re.search(expected, capsys.readouterr().err)
        return
    assert main([*argv, "--out", str(tmp_path / "o.png"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_mask_painter_and_edit_viewer(pipe, scene):
    from muse_mini.viz.edit_widgets import EditViewer, MaskPainter

    _, low, _, _ = scene
    painter = MaskPainter(low, pipe.tokenizer.grid)
    painter.select([1, 2], [3, 3])
    assert painter.token_mask.sum() == 2 and painter.mask.shape == (32, 32)
    np.testing.assert_array_equal(pixel_mask_to_token_mask(painter.mask, 8).reshape(8, 8), painter.token_mask)
    result = pipe.inpaint(low, painter.mask, "a red circle", stage="base")
    np.testing.assert_array_equal(result.token_mask[0].reshape(8, 8), painter.token_mask)

    edit = pipe.edit(low, "a blue circle", iterations=4, stage="base")
    viewer = EditViewer.from_result(edit)
    assert viewer.slider.max == 4 and viewer.iteration == 4
    np.testing.assert_array_equal(viewer.frame, edit.base_images[0])
    viewer.slider.value = 0
    assert viewer.iteration == 0 and viewer.image.value[:4] == b"\x89PNG"


def test_every_editing_case_is_solvable_and_unsolved():
    """The perfect edit (the scene redrawn as the prompt says) is accepted and stays in place; the input is not."""
    from muse_mini.data.captions import parse_caption
    from muse_mini.data.evaluator import evaluate, find_objects
    from muse_mini.evaluation.editing_tasks import (
        MARGIN, inpaint_cases, mask_free_cases, outpaint_cases, psnr_outside, stays_in_place,
    )

    for i, case in enumerate(inpaint_cases(16, 1000)):
        objects = shapes.sample_scene(1000, "train", i, kinds=("relation",)).objects
        req = parse_caption(case.prompt)
        redrawn = [shapes.ShapeObject(c, s, o.cx, o.cy, o.size) for (c, s), o in zip(req.pairs, objects)]
        assert evaluate(shapes.render(redrawn), case.prompt).ok and not evaluate(case.image, case.prompt).ok
        x0, y0, x1, y1 = objects[i % 2].box
        assert case.mask.sum() == (min(64, y1 + MARGIN) - max(0, y0 - MARGIN)) * (min(64, x1 + MARGIN) - max(0, x0 - MARGIN))
    cases = mask_free_cases(16, 1000)
    recoloured = []
    for case in cases:
        req = parse_caption(case.prompt)
        o = case.original
        recoloured.append(shapes.render([shapes.ShapeObject(req.colour, o.shape, o.cx, o.cy, o.size)]))
        assert not evaluate(case.image, case.prompt).ok
    in_place, same_size = stays_in_place(recoloured, cases)
    assert in_place.all() and same_size.all()
    assert all(evaluate(im, c.prompt).ok for im, c in zip(recoloured, cases))
    for case in outpaint_cases(16, 1000):
        req = parse_caption(case.prompt)
        assert case.image[:, 32:].min() == 255 and case.mask[:, 32:].all() and not case.mask[:, :32].any()
        (left,) = find_objects(case.image)
        right = shapes.ShapeObject(req.other_colour, req.other_shape, 52, min(57, max(7, round(left.cy))), 12)
        image = case.image.copy()
        image[:, 32:] = shapes.render([right])[:, 32:]
        assert evaluate(image, case.prompt).ok, case.prompt
    a = np.zeros((1, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    keep = np.ones((1, 4, 4), bool)
    keep[0, 0, 0] = False
    assert psnr_outside(a, b, keep)[0] > 100 and psnr_outside(a, b, ~keep)[0] < 1


def test_the_editing_tasks_run_and_kept_tokens_are_always_kept(pipe):
    """scripts/eval_editing.py's measurement at smoke size: every figure present, preservation exact."""
    from muse_mini.evaluation.editing_tasks import run_tasks

    report = run_tasks(pipe, n=4, iterations=4, seed=0)
    assert set(report) == {"base", "superres"}
    for stage, tasks in report.items():
        assert set(tasks) == {"inpaint", "mask_free", "outpaint"}
        assert tasks["inpaint"]["tokens_kept"] == 1.0  # §3.3.1: the sampler never re-masks a given token
        for figures in tasks.values():
            assert all(0.0 <= v <= 1.0 for k, v in figures.items() if not k.startswith("psnr"))
            assert "text_to_image" in figures
        assert {"accepted_paste_back"} <= set(tasks["inpaint"]) & set(tasks["outpaint"])
    assert {"accepted_at_1", "all_three_at_2"} <= set(report["base"]["mask_free"])


def test_outpaint_refuses_an_oversized_canvas_before_any_work(pipe, scene, monkeypatch):
    """``by`` beyond 3 input sides is refused at once: no prompt encoded, no window decoded."""
    import time

    high, low, _, _ = scene
    monkeypatch.setattr(pipe, "encode", lambda prompts: pytest.fail("encoded before refusing by"))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"by: expected at most 192 pixels \(3× the 64-pixel input"):
        pipe.outpaint(high, "x", extend="right", by=100000)
    assert time.perf_counter() - start < 5
    with pytest.raises(ValueError, match=r"by: expected at most 96 pixels"):
        pipe.outpaint(low, "x", extend="up", by=97)


def test_mask_free_editing_takes_its_defaults_from_the_runs_config(pipe, scene):
    """The toy preset edits without guidance; a config saying 4 edits with 4, as the paper does."""
    import dataclasses

    _, low, _, _ = scene
    assert pipe.cfg.edit == EditConfig(guidance=0.0)
    prompt = "a blue circle left of a red square"
    default = pipe.edit(low, prompt, iterations=3, seed=4, stage="base")
    explicit = pipe.edit(low, prompt, iterations=3, seed=4, stage="base", guidance=0.0)
    np.testing.assert_array_equal(default.base_trajectory.tokens_BxIxN, explicit.base_trajectory.tokens_BxIxN)
    paper = dataclasses.replace(pipe, cfg=dataclasses.replace(pipe.cfg, edit=EditConfig(guidance=4.0)))
    np.testing.assert_array_equal(paper.edit(low, prompt, iterations=3, seed=4, stage="base").base_images,
                                  pipe.edit(low, prompt, iterations=3, seed=4, stage="base", guidance=4.0).base_images)


def test_cli_mask_free_uses_the_runs_editing_defaults(pipe, smoke_runs, scene, tmp_path):
    _, low, _, _ = scene
    Image.fromarray(low).save(tmp_path / "in.png")
    prompt = "a blue circle left of a red square"
    assert main(["edit", "--run", str(smoke_runs / "smoke"), "--image", str(tmp_path / "in.png"), "--prompt", prompt,
                 "--iterations", "3", "--seed", "4", "--out", str(tmp_path / "o.png")]) == 0
    expected = pipe.edit(low, prompt, iterations=3, seed=4, stage="base").images[0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), expected)


def test_a_run_config_without_an_edit_section_loads_with_the_papers_settings(pipe):
    """Runs written before the ``edit`` section: the section takes MuseConfig's defaults."""
    stored = pipe.cfg.to_dict()
    del stored["edit"]
    assert from_dict(type(pipe.cfg), stored).edit == EditConfig()
