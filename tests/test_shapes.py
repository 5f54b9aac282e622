"""The Shapes world generator against its contract, docs/shapes.md."""

import argparse
import itertools
import re

import numpy as np
import pytest
from PIL import Image

from muse_mini.cli import shapes as cli_shapes
from muse_mini.data import evaluator, shapes
from muse_mini.data.captions import (
    COLOURS, HOLDOUT_PAIRS, KINDS, REGIONS, RELATIONS, SHAPES, SIZES, TRAIN_PAIRS, Requirements,
    all_canonical_captions, canonical_caption, canonical_prompts, parse_caption,
)
# The spec's palette and caption forms, written from docs/shapes.md apart from the library.
from spec_checker import CAPTION_FORMS, NOUN, PALETTE

HOLDOUT = {("blue", "triangle"), ("red", "square"), ("yellow", "circle"), ("green", "diamond")}


@pytest.fixture(scope="module")
def train():
    return shapes.generate(2000, seed=7, split="train")


@pytest.fixture(scope="module")
def holdout():
    return shapes.generate(800, seed=7, split="holdout")


def test_constants_match_spec():
    assert COLOURS == PALETTE
    assert SHAPES == ("circle", "square", "triangle", "diamond")
    assert SIZES == {"small": (16, 20), "large": (26, 32)}
    assert set(HOLDOUT_PAIRS) == HOLDOUT
    assert KINDS == ("single", "placed", "count", "relation")
    assert set(TRAIN_PAIRS) == set(itertools.product(PALETTE, SHAPES)) - HOLDOUT
    # every colour and every shape still appears in training with other partners
    assert {c for c, _ in TRAIN_PAIRS} == set(PALETTE)
    assert {s for _, s in TRAIN_PAIRS} == set(SHAPES)


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_masks_fill_their_box(shape):
    fill = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5}[shape]
    for size in range(16, 33):
        m = shapes.shape_mask(shape, size)
        ys, xs = np.nonzero(m)
        assert (ys.min(), xs.min(), ys.max(), xs.max()) == (0, 0, size - 1, size - 1)
        assert abs(m.mean() - fill) < 0.08, (shape, size, m.mean())
        np.testing.assert_array_equal(m, m[:, ::-1])  # left-right symmetric
        widths = m.sum(axis=1)
        if shape == "triangle":  # apex up, base at the bottom
            assert widths[-1] == size and widths[0] <= 2 and np.all(np.diff(widths) >= 0)
        if shape == "diamond":  # widest in the middle, vertically symmetric
            np.testing.assert_array_equal(m, m[::-1])
            assert widths.argmax() in (size // 2 - 1, size // 2)


def test_render_is_flat_palette_on_white():
    objs = [shapes.ShapeObject("orange", "circle", 20.0, 20.0, 18),
            shapes.ShapeObject("blue", "diamond", 45.5, 45.5, 17)]  # odd size: centre on a pixel centre
    img = shapes.render(objs)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert (img[0, 0] == 255).all()
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert colours == {(255, 255, 255), PALETTE["orange"], PALETTE["blue"]}
    ys, xs = np.nonzero((img == PALETTE["blue"]).all(-1))
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (37, 54, 37, 54)


def test_generated_images_are_64px_uint8_palette_only(train):
    images, captions, scenes = train
    assert images.shape == (2000, 64, 64, 3) and images.dtype == np.uint8
    allowed = {(255, 255, 255), *PALETTE.values()}
    rgb = images.reshape(-1, 3).astype(np.int32)
    packed = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])
    assert {(int(p) >> 16, (int(p) >> 8) & 255, int(p) & 255) for p in packed} <= allowed
    for img, scene in zip(images[:200], scenes[:200]):
        np.testing.assert_array_equal(img, scene.render())
        for o in scene.objects:  # each object's own colour appears in its box
            x0, y0, x1, y1 = o.box
            assert (img[y0:y1, x0:x1] == PALETTE[o.colour]).all(-1).any()


def test_determinism():
    a = shapes.sample_scene(3, "train", 17)
    b = shapes.sample_scene(3, "train", 17)
    assert a == b
    np.testing.assert_array_equal(a.render(), b.render())
    # generate() is the same pure function, whatever the start offset
    imgs, caps, _ = shapes.generate(12, seed=3, start=10)
    imgs2, caps2, _ = shapes.generate(4, seed=3, start=17)
    np.testing.assert_array_equal(imgs[7:11], imgs2)
    assert caps[7:11] == caps2
    # other index, seed or split -> another scene
    for other in (shapes.sample_scene(3, "train", 18), shapes.sample_scene(4, "train", 17),
                  shapes.sample_scene(3, "holdout", 17)):
        assert other.objects != a.objects
    # a batch of consecutive scenes has no duplicates
    imgs, _, _ = shapes.generate(200, seed=3)
    assert len({im.tobytes() for im in imgs}) == 200


def test_paraphrases_do_not_change_pixels_or_canonical_caption():
    plain_imgs, plain_caps, plain = shapes.generate(40, seed=1)
    para_imgs, para_texts, para = shapes.generate(40, seed=1, paraphrase_prob=1.0)
    np.testing.assert_array_equal(plain_imgs, para_imgs)
    assert [s.caption for s in para] == plain_caps
    for scene, text in zip(para, para_texts):
        assert scene.paraphrase == text != scene.caption
        with pytest.raises(ValueError):
            parse_caption(text)
    _, texts, scenes = shapes.generate(400, seed=1, paraphrase_prob=0.5)
    n_para = sum(s.paraphrase is not None for s in scenes)
    assert 140 < n_para < 260  # canonical forms stay common (spec)
    assert any(re.search(r"\d", t) for t in texts)  # digits appear


def test_downsample_is_2x2_block_mean(train):
    images = train[0][:3]
    low = shapes.downsample(images)
    assert low.shape == (3, 32, 32, 3) and low.dtype == np.uint8
    manual = np.zeros((3, 32, 32, 3), np.uint8)
    for n, i, j in itertools.product(range(3), range(32), range(32)):
        block = images[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2].astype(int)
        manual[n, i, j] = (block.sum(axis=(0, 1)) + 2) // 4  # mean, rounded half up
    np.testing.assert_array_equal(low, manual)
    assert np.abs(low - images.reshape(3, 32, 2, 32, 2, 3).mean(axis=(2, 4))).max() <= 0.5
    np.testing.assert_array_equal(shapes.generate(3, seed=7, resolution=32)[0], low)


def _gap(a, b):
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return max(bx0 - ax1, ax0 - bx1, by0 - ay1, ay0 - by1)


def test_scene_geometry(train, holdout):
    for scenes in (train[2], holdout[2]):
        for scene in scenes:
            objs = scene.objects
            for o in objs:
                x0, y0, x1, y1 = o.box
                assert 0 <= x0 and 0 <= y0 and x1 <= 64 and y1 <= 64
                assert o.cx == x0 + o.size / 2
                hi = 32 if scene.kind in ("single", "placed") else 20  # several objects: small
                assert 16 <= o.size <= hi
            for a, b in itertools.combinations(objs, 2):
                assert _gap(a, b) >= 2  # spec: never overlap, >= 2 px apart
            req = scene.requirements
            if scene.kind == "single":
                lo, hi = SIZES[req.size]
                assert len(objs) == 1 and lo <= objs[0].size <= hi
            elif scene.kind == "placed":
                (o,) = objs
                half = 32
                if req.region == "center":
                    assert abs(o.cx - half) <= 64 / 6 and abs(o.cy - half) <= 64 / 6
                else:
                    v, h = req.region.split()
                    assert (o.cy < half) == (v == "top") and (o.cx < half) == (h == "left")
            elif scene.kind == "count":
                assert len(objs) == req.count
                assert {(o.colour, o.shape) for o in objs} == {(req.colour, req.shape)}
            else:
                a, b = objs
                assert (a.colour, a.shape) != (b.colour, b.shape)
                dx, dy = b.cx - a.cx, b.cy - a.cy
                along, other = {"left of": (dx, abs(dy)), "right of": (-dx, abs(dy)),
                                "above": (dy, abs(dx)), "below": (-dy, abs(dx))}[req.relation]
                assert along >= 12 and other <= along / 2


def test_caption_grammar(train, holdout):
    for scenes in (train[2], holdout[2]):
        for scene in scenes:
            cap = scene.caption
            m = CAPTION_FORMS[scene.kind].fullmatch(cap)
            assert m, cap
            assert not re.search(r"\ba orange\b|\ban (?!orange)", cap), cap
            assert cap == cap.lower() and not cap.endswith(".")
            assert parse_caption(cap) == scene.requirements
            assert canonical_caption(scene.requirements) == cap
            objs = scene.objects
            if scene.kind == "count":
                assert cap.startswith({2: "two ", 3: "three ", 4: "four "}[len(objs)])
                assert cap.endswith(f"{objs[0].colour} {objs[0].shape}s")
            else:
                named = re.findall(NOUN, cap)
                assert named == [(o.colour, o.shape) for o in objs]
    assert canonical_caption(Requirements("placed", "orange", "circle", region="center")) \
        == "an orange circle in the center"
    assert canonical_caption(Requirements(
        "relation", "red", "square", relation="left of", other_colour="orange",
        other_shape="diamond")) == "a red square left of an orange diamond"


def test_train_split_never_contains_a_holdout_pair():
    _, captions, scenes = shapes.generate(4000, seed=11, split="train")
    for cap, scene in zip(captions, scenes):
        assert not any((o.colour, o.shape) in HOLDOUT for o in scene.objects), cap
        assert not any(f"{c} {s}" in cap for c, s in HOLDOUT), cap


def test_every_holdout_scene_contains_a_holdout_pair(holdout):
    _, captions, scenes = holdout
    for cap, scene in zip(captions, scenes):
        assert any((o.colour, o.shape) in HOLDOUT for o in scene.objects), cap
        assert any(f"{c} {s}" in cap for c, s in HOLDOUT), cap
        assert scene.requirements.is_holdout
    # hold-out relations put the hold-out pair on either side
    rel = [s for s in scenes if s.kind == "relation"]
    assert any((s.objects[0].colour, s.objects[0].shape) in HOLDOUT for s in rel)
    assert any((s.objects[1].colour, s.objects[1].shape) in HOLDOUT for s in rel)


def test_kinds_are_balanced(train):
    scenes = train[2]
    counts = {k: sum(s.kind == k for s in scenes) for k in KINDS}
    assert counts == {k: 500 for k in KINDS}
    # and within kinds the content varies evenly enough
    relations = [s.requirements.relation for s in scenes if s.kind == "relation"]
    assert min(relations.count(r) for r in RELATIONS) > 90
    regions = [s.requirements.region for s in scenes if s.kind == "placed"]
    assert min(regions.count(r) for r in REGIONS) > 70
    only = shapes.generate(8, kinds=("count",))[2]
    assert {s.kind for s in only} == {"count"}


@pytest.mark.parametrize("bad", [
    "a orange circle", "An orange circle", "an red circle", "a large red circle.",
    "3 red circles", "two red circle", "one red circle", "a big red circle",
    "a red circle left of a red circle", "a red circle to the left of a blue square",
    "a red circle in the middle", "five red circles", "a red hexagon", "", "a  red circle",
])
def test_parse_caption_rejects_non_canonical(bad):
    with pytest.raises(ValueError, match="caption"):
        parse_caption(bad)


def test_parse_caption_fields():
    r = parse_caption("an orange diamond below a yellow circle")
    assert (r.kind, r.colour, r.shape, r.relation, r.other_colour, r.other_shape) == \
        ("relation", "orange", "diamond", "below", "yellow", "circle")
    assert r.is_holdout
    r = parse_caption("four purple triangles")
    assert (r.kind, r.count, r.is_holdout) == ("count", 4, False)


def test_canonical_prompts():
    for split, default_n in (("train", 160), ("holdout", 32)):
        prompts = canonical_prompts(split)
        assert len(prompts) == default_n == len(set(prompts))
        assert prompts == canonical_prompts(split)
        reqs = [parse_caption(p) for p in prompts]
        assert [r.kind for r in reqs[:8]] == list(KINDS) * 2  # interleaved
        assert all(r.is_holdout == (split == "holdout") for r in reqs)
    many = canonical_prompts("holdout", n=100)
    kinds = [parse_caption(p).kind for p in many]
    assert {k: kinds.count(k) for k in KINDS} == {k: 25 for k in KINDS}
    assert canonical_prompts("train", n=10, seed=1) != canonical_prompts("train", n=10)
    counts = {k: len(all_canonical_captions(k, "train")) for k in KINDS}
    assert counts == {"single": 40, "placed": 100, "count": 60, "relation": 1520}


@pytest.mark.parametrize("call, name", [
    (lambda: shapes.sample_scene(-1, "train", 0), "seed"),
    (lambda: shapes.sample_scene(0, "test", 0), "split"),
    (lambda: shapes.sample_scene(0, "train", 1.5), "index"),
    (lambda: shapes.sample_scene(0, "train", 0, paraphrase_prob=2), "paraphrase_prob"),
    (lambda: shapes.sample_scene(0, "train", 0, kinds=("single", "scatter")), "kinds"),
    (lambda: shapes.generate(-3), "n"),
    (lambda: shapes.generate(2, resolution=48), "resolution"),
    (lambda: canonical_prompts("validation"), "split"),
    (lambda: shapes.ShapeObject("pink", "circle", 10, 10, 16), "colour"),
    (lambda: shapes.ShapeObject("red", "circle", 10, 10, 17), "pixel-aligned"),
    (lambda: shapes.render([shapes.ShapeObject("red", "circle", 60, 10, 16)]), "canvas"),
    (lambda: shapes.downsample(np.zeros((63, 64, 3), np.uint8)), "divisible by 2"),
])
def test_argument_validation(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_generate_matches_sampling_each_scene_alone():
    # generate() draws a whole batch into one array; each image must equal the scene
    # sampled and rendered on its own (speed is measured in benchmarks/, not here).
    images, captions, scenes = shapes.generate(40, seed=5, start=7, resolution=32)
    for i, (img, text, scene) in enumerate(zip(images, captions, scenes)):
        alone = shapes.sample_scene(5, "train", 7 + i)
        assert alone == scene and text == alone.text
        np.testing.assert_array_equal(img, shapes.render(alone.objects, resolution=32))


def test_cli_writes_pngs_and_captions(tmp_path):
    parser = argparse.ArgumentParser()
    cli_shapes.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["shapes", "--split", "holdout", "--n", "5", "--seed", "2",
                              "--out", str(tmp_path / "out")])
    assert args.func(args) == 0
    out = tmp_path / "out"
    captions = (out / "captions.txt").read_text().splitlines()
    assert sorted(p.name for p in out.iterdir()) == \
        [f"{i:05d}.png" for i in range(5)] + ["captions.txt"]
    assert captions == [shapes.sample_scene(2, "holdout", i).caption for i in range(5)]
    for i, caption in enumerate(captions):
        img = np.asarray(Image.open(out / f"{i:05d}.png"))
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        result = evaluator.evaluate(img, caption)
        assert result.ok, (caption, result.reasons)
