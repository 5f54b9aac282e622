"""A small image-text webdataset in img2dataset's exact layout, written by the tests.

Real photographs where scikit-image is installed (it ships a few: a cat, a
coffee cup, a rocket, ...), generated smooth images otherwise. Each is cut
into several crops so the set is larger than the photo collection.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from muse_mini.data.webdataset import write_webdataset

PHOTOS = {"astronaut": "an astronaut in a white suit", "coffee": "a cup of coffee on a saucer",
          "chelsea": "a ginger cat looking left", "rocket": "a rocket on a launch pad",
          "immunohistochemistry": "a stained tissue sample under a microscope",
          "hubble_deep_field": "galaxies in the deep field"}


def photos() -> list[tuple[np.ndarray, str]]:
    """``(uint8 H×W×3, caption)`` pairs: scikit-image's sample photographs, or generated images."""
    try:
        import skimage.data
    except ImportError:
        rng = np.random.default_rng(0)
        out = []
        for i, caption in enumerate(PHOTOS.values()):
            smooth = rng.normal(size=(6, 8, 3)).cumsum(0).cumsum(1)
            img = np.kron(smooth, np.ones((64, 64, 1)))
            img = (255 * (img - img.min()) / np.ptp(img)).astype(np.uint8)
            out.append((img, caption))
        return out
    return [(getattr(skimage.data, name)(), caption) for name, caption in PHOTOS.items()]


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def samples(n: int, *, corrupt: tuple[int, ...] = (), uncaptioned: tuple[int, ...] = ()):
    """``n`` ``(jpeg, caption, meta)`` samples: crops of the photos at several positions and scales."""
    base = photos()
    for i in range(n):
        image, caption = base[i % len(base)]
        h, w = image.shape[:2]
        side = int(min(h, w) * (0.6 + 0.1 * ((i // len(base)) % 4)))
        top = (i * 37) % (h - side + 1)
        left = (i * 53) % (w - side + 1)
        crop = image[top:top + side, left:left + side]
        data = b"\xff\xd8 this is not a jpeg" if i in corrupt else jpeg(crop)
        yield data, ("" if i in uncaptioned else caption), {"width": side, "height": side}


def write_photo_webdataset(out, n: int = 48, *, shard_size: int = 12, **bad):
    """Write ``n`` samples as img2dataset webdataset shards under ``out``; returns the shard paths."""
    return write_webdataset(samples(n, **bad), out, shard_size=shard_size)
