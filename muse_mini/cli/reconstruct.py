"""``muse-mini reconstruct``: encode and decode a folder of PNGs with a trained tokenizer (§2.2).

Images of another size are brought to the tokenizer's as training brings its
data (:func:`muse_mini.data.sources.resize_center_crop`), so the images a run
was trained from can be given as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from muse_mini.cli.common import check_out_dir

from muse_mini.data.sources import resize_center_crop
from muse_mini.models.codec import reconstruct
from muse_mini.runs.layout import stage_complete
from muse_mini.runs.load import load_tokenizer


def add_parsers(sub) -> None:
    p = sub.add_parser("reconstruct", help="encode and decode PNG images with a trained tokenizer")
    p.add_argument("--run", required=True, help="finished tokenizer run directory")
    p.add_argument("--images", required=True,
                   help="folder of PNG images; any size: resized and centre-cropped to the tokenizer's")
    p.add_argument("--out", required=True, help="output folder (same file names, at the tokenizer's size)")
    p.set_defaults(func=run)


def run(args) -> None:
    src, out = Path(args.images), check_out_dir(args.out)
    paths = sorted(src.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"--images: no *.png files in {src}")
    if not stage_complete(args.run):
        raise FileNotFoundError(f"--run: {args.run} holds no finished tokenizer run")
    vqgan = load_tokenizer(args.run)
    size, images, resized = vqgan.image_size, [], 0
    for path in paths:
        try:
            with Image.open(path) as img:
                resized += img.size != (size, size)
                images.append(np.asarray(resize_center_crop(img, size)))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"--images: {path} is not a readable image ({e})") from None
    if resized:
        print(f"resized {resized} of {len(paths)} images to the tokenizer's {size}×{size} "
              "(shorter side resized, then centre-cropped, as training data is)")
    recon = reconstruct(vqgan, np.stack(images))
    out.mkdir(parents=True, exist_ok=True)
    for path, img in zip(paths, recon):
        Image.fromarray(img).save(out / path.name)
    print(f"wrote {len(paths)} reconstructions to {out}")
