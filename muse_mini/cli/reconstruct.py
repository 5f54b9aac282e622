"""``muse-mini reconstruct``: encode and decode a folder of PNGs with a trained tokenizer (§2.2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from muse_mini.cli.common import check_out_dir

from muse_mini.models.codec import reconstruct
from muse_mini.runs.layout import stage_complete
from muse_mini.runs.load import load_tokenizer


def add_parsers(sub) -> None:
    p = sub.add_parser("reconstruct", help="encode and decode PNG images with a trained tokenizer")
    p.add_argument("--run", required=True, help="finished tokenizer run directory")
    p.add_argument("--images", required=True, help="folder of *.png images of the tokenizer's size")
    p.add_argument("--out", required=True, help="output folder (same file names)")
    p.set_defaults(func=run)


def run(args) -> None:
    src, out = Path(args.images), check_out_dir(args.out)
    paths = sorted(src.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"--images: no *.png files in {src}")
    if not stage_complete(args.run):
        raise FileNotFoundError(f"--run: {args.run} holds no finished tokenizer run")
    vqgan = load_tokenizer(args.run)
    images = []
    for path in paths:
        try:
            img = np.asarray(Image.open(path).convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"--images: {path} is not a readable image ({e})") from None
        if img.shape[:2] != (vqgan.image_size, vqgan.image_size):
            raise ValueError(f"--images: {path.name} is {img.shape[1]}×{img.shape[0]}, but the tokenizer "
                             f"in {args.run} expects {vqgan.image_size}×{vqgan.image_size}")
        images.append(img)
    recon = reconstruct(vqgan, np.stack(images))
    out.mkdir(parents=True, exist_ok=True)
    for path, img in zip(paths, recon):
        Image.fromarray(img).save(out / path.name)
    print(f"wrote {len(paths)} reconstructions to {out}")
