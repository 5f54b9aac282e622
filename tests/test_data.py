"""Hugging Face ``datasets`` views: the Shapes world and any local image–text source."""

import io
import json

import datasets
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from muse_mini.config import get_preset
from muse_mini.data import sources as D
from muse_mini.data import shapes as S
from muse_mini.data.captions import parse_caption
from muse_mini.training.feeds import TokenData, training_images

RED, BLUE = (220, 40, 40), (40, 80, 220)


def test_shapes_dataset_features_and_formats():
    ds = D.shapes_dataset(8, split="holdout", seed=3)
    assert len(ds) == 8
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["caption"] == datasets.Value("string")
    assert set(ds.features["objects"].feature) == {"colour", "shape", "cx", "cy", "size"}
    images, captions, scenes = S.generate(8, seed=3, split="holdout")
    assert ds["caption"] == captions and ds["kind"] == [s.kind for s in scenes]
    assert ds[3]["objects"] == [{"colour": o.colour, "shape": o.shape, "cx": o.cx, "cy": o.cy,
                                 "size": o.size} for o in scenes[3].objects]

    as_np = ds.with_format("numpy")[:]
    assert as_np["image"].shape == (8, 64, 64, 3) and as_np["image"].dtype == np.uint8
    np.testing.assert_array_equal(as_np["image"], images)  # PNG is lossless

    as_jax = ds.select_columns(["image", "caption"]).with_format("jax")[:4]
    assert isinstance(as_jax["image"], jnp.ndarray) and as_jax["image"].shape == (4, 64, 64, 3)
    assert list(as_jax["caption"]) == captions[:4]

    low = D.shapes_dataset(4, seed=3, resolution=32).with_format("numpy")[:]["image"]
    np.testing.assert_array_equal(low, S.generate(4, seed=3, resolution=32)[0])


def test_shapes_dataset_cache_round_trip(tmp_path, monkeypatch):
    first = D.shapes_dataset(6, seed=1, cache_dir=tmp_path)
    (cached,) = list(tmp_path.iterdir())
    assert "train" in cached.name and "n6" in cached.name

    def no_generation(*args, **kwargs):
        raise AssertionError("cache miss")

    monkeypatch.setattr(S, "generate", no_generation)
    again = D.shapes_dataset(6, seed=1, cache_dir=tmp_path)
    assert again["caption"] == first["caption"]
    np.testing.assert_array_equal(again.with_format("numpy")["image"],
                                  first.with_format("numpy")["image"])
    with pytest.raises(AssertionError, match="cache miss"):  # other arguments, other entry
        D.shapes_dataset(6, seed=2, cache_dir=tmp_path)


def _two_tone(width, height):
    """Blue image with a red centred square of side min(width, height)."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = BLUE
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    img[top:top + side, left:left + side] = RED
    return img


@pytest.mark.parametrize("width, height", [(120, 60), (40, 100), (64, 64)])
def test_resize_center_crop(width, height):
    out = np.asarray(D.resize_center_crop(Image.fromarray(_two_tone(width, height)), 16))
    assert out.shape == (16, 16, 3)
    # the crop is exactly the red centre square; only resampling ringing at its rim
    assert np.abs(out[1:-1, 1:-1].astype(int) - RED).max() <= 12
    squashed = np.asarray(D.resize_center_crop(Image.fromarray(_two_tone(width, height)), 16,
                                               center_crop=False))
    if width != height:  # the whole image, blue sides included, squeezed into the square
        corner = squashed[0, 0] if width > height else squashed[0, 8]
        assert np.abs(corner.astype(int) - BLUE).max() <= 12


def _write_pngs(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(_two_tone(w, h)).save(folder / f"img{i}.png")


def test_imagefolder_with_metadata_csv(tmp_path):
    _write_pngs(tmp_path / "folder", [(90, 45), (45, 90), (50, 50)])
    (tmp_path / "folder" / "metadata.csv").write_text(
        "file_name,text\nimg0.png,a wide one\nimg1.png,a tall one\nimg2.png,\"a square, too\"\n")
    ds = D.load_image_text_dataset(tmp_path / "folder", caption_column="text", image_size=24,
                                   cache_dir=tmp_path / "cache")
    assert ds.column_names == ["image", "caption"]
    assert sorted(ds["caption"]) == ["a square, too", "a tall one", "a wide one"]
    images, captions = D.to_numpy_batch(ds)
    assert images.shape == (3, 24, 24, 3) and images.dtype == np.uint8
    assert np.abs(images[:, 2:-2, 2:-2].astype(int) - RED).max() <= 12  # centre crops


def test_imagefolder_with_metadata_jsonl(tmp_path):
    _write_pngs(tmp_path / "folder", [(30, 20), (20, 30)])
    lines = [{"file_name": "img0.png", "caption": "first"},
             {"file_name": "img1.png", "caption": "second"}]
    (tmp_path / "folder" / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    ds = D.load_image_text_dataset(str(tmp_path / "folder"), image_size=8,
                                   cache_dir=tmp_path / "cache")
    assert sorted(ds["caption"]) == ["first", "second"]


def _png_bytes(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def test_parquet_file_with_custom_columns(tmp_path):
    table = pa.table({
        "picture": [{"bytes": _png_bytes(_two_tone(60, 30)), "path": None},
                    {"bytes": _png_bytes(_two_tone(30, 60)), "path": None}],
        "alt_text": ["left", "right"],
        "other": [1, 2],
    })
    pq.write_table(table, tmp_path / "pairs.parquet")
    ds = D.load_image_text_dataset(tmp_path / "pairs.parquet", image_column="picture",
                                   caption_column="alt_text", image_size=12,
                                   cache_dir=tmp_path / "cache")
    assert ds.column_names == ["image", "caption"] and ds["caption"] == ["left", "right"]
    images, _ = D.to_numpy_batch(ds)
    assert images.shape == (2, 12, 12, 3)
    assert np.abs(images[:, 1:-1, 1:-1].astype(int) - RED).max() <= 12


def test_save_to_disk_directory(tmp_path):
    src = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(_two_tone(40, 20))], "captions": [["first caption", "second"]]},
        features=datasets.Features({"img": datasets.Image(),
                                    "captions": datasets.List(datasets.Value("string"))}))
    src.save_to_disk(str(tmp_path / "saved"))
    ds = D.load_image_text_dataset(tmp_path / "saved", image_column="img",
                                   caption_column="captions", image_size=10)
    assert ds["caption"] == ["first caption"]  # several captions per image: the first
    assert D.to_numpy_batch(ds)[0].shape == (1, 10, 10, 3)


def test_shapes_save_to_disk_loads_as_image_text(tmp_path):
    D.shapes_dataset(4, seed=0, cache_dir=tmp_path)
    (saved,) = list(tmp_path.iterdir())
    ds = D.load_image_text_dataset(saved, image_size=64)
    images, captions = D.to_numpy_batch(ds)
    expected, expected_caps, _ = S.generate(4, seed=0)
    assert captions == expected_caps
    np.testing.assert_array_equal(images, expected)  # 64 -> 64 is a no-op


def test_missing_column_and_source_errors(tmp_path):
    pq.write_table(pa.table({"img": [{"bytes": _png_bytes(_two_tone(8, 8)), "path": None}],
                             "text": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"caption_column 'caption' not found.*\['img', 'text'\]"):
        D.load_image_text_dataset(tmp_path / "p.parquet", image_column="img",
                                  cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"image_column 'image' not found.*\['img', 'text'\]"):
        D.load_image_text_dataset(tmp_path / "p.parquet", caption_column="text",
                                  cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="neither"):
        D.load_image_text_dataset(tmp_path / "missing" / "dir")
    with pytest.raises(ValueError, match="image_size"):
        D.load_image_text_dataset(tmp_path / "p.parquet", image_size=0)


def test_data_kinds_set_the_training_mix():
    mix = ("single", "count", "relation", "relation")
    cfg = get_preset("toy", ["data.num_examples=8", "data.kinds=" + ",".join(mix)])
    images, captions = training_images(cfg)
    assert images.shape == (8, 64, 64, 3)
    assert [parse_caption(c).kind for c in captions] == list(mix) * 2


def _token_data(captions):
    n, u = 5, len(captions)
    rng = np.random.default_rng(0)
    return TokenData(tokens=rng.integers(0, 64, (n, 16)).astype(np.int32),
                     caption_index=(np.arange(n) % u).astype(np.int32), captions=list(captions),
                     text=rng.normal(size=(u, 4, 8)).astype(np.float32), text_mask=np.ones((u, 4), bool))


def test_token_cache_round_trips_without_pickles(tmp_path):
    captions = ["a red circle", "an orange square in the center", "zwei blaue Quadrate, ünïcode"]
    data = _token_data(captions)
    data.save(tmp_path / "data.npz")
    with np.load(tmp_path / "data.npz", allow_pickle=False) as f:  # no object arrays inside
        assert f["captions"].dtype.kind == "U"
    back = TokenData.load(tmp_path / "data.npz")
    assert back.captions == captions and back.hr_tokens is None
    for name in ("tokens", "caption_index", "text", "text_mask"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))


def test_an_unreadable_token_cache_says_how_to_rebuild_it(tmp_path):
    """A cache this muse_mini cannot read (e.g. pickled captions) is never unpickled: one line says
    to delete it so the stage rebuilds it."""
    data = _token_data(["a red circle"])
    np.savez(tmp_path / "data.npz", tokens=data.tokens, caption_index=data.caption_index,
             captions=np.array(data.captions, dtype=object), text=data.text, text_mask=data.text_mask)
    with pytest.raises(ValueError, match=r"data.npz: .* is not a token cache this muse_mini reads .*delete it") as e:
        TokenData.load(tmp_path / "data.npz")
    assert "\n" not in str(e.value) and e.value.__cause__ is None
