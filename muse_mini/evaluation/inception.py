"""Inception-v3 FID and CLIP score for photographs (Tables 1–2), through the optional ``fid`` extra.

``pytorch-fid`` ships the exact FID network and ``open-clip-torch`` CLIP; both need torch, which
never enters the core runtime. Weights are read from local files; a missing one says where to put it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from muse_mini.evaluation.frechet import feature_stats, frechet_distance

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_NAME}"
EXTRA = "pip install 'muse_mini[fid]'"


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"{module} is not installed: Inception FID and CLIP score need the optional extra "
                          f"({EXTRA})") from None


def default_weights_path() -> Path:
    """Where ``pytorch-fid`` looks for its weights: ``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch``)."""
    home = os.environ.get("TORCH_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(home).expanduser() / "hub" / "checkpoints" / FID_WEIGHTS_NAME


def inception_weights(path=None) -> Path:
    """The FID Inception weights file; a clear error when it is not on this machine."""
    path = Path(path).expanduser() if path is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"inception weights: no file at {path}. Download {FID_WEIGHTS_URL} on a machine "
                                f"with network access and copy it there (or pass its path)")
    return path


@contextlib.contextmanager
def _hub_dir_holding(weights: Path):
    """A torch hub directory whose checkpoint cache holds ``weights``, so nothing is downloaded."""
    import torch

    old = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        (Path(tmp) / "checkpoints" / FID_WEIGHTS_NAME).symlink_to(weights.resolve())
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub.set_dir(old)


def inception_features(images, *, weights=None, batch_size: int = 50, device: str = "cpu") -> np.ndarray:
    """The 2048-d pool features of uint8 N×H×W×3 images (resized to 299 px inside the network)."""
    weights = inception_weights(weights)
    torch = _require("torch")
    _require("pytorch_fid")
    from pytorch_fid.inception import InceptionV3

    with _hub_dir_holding(weights):
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
    images = np.asarray(images)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start:start + batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 255)
            out.append(model(x.to(device))[0].squeeze(-1).squeeze(-1).cpu().numpy())
    return np.concatenate(out)


def inception_fid(images, reference, **kwargs) -> float:
    """FID of ``images`` against ``reference`` images, both uint8 N×H×W×3."""
    return frechet_distance(feature_stats(inception_features(images, **kwargs)),
                            feature_stats(inception_features(reference, **kwargs)))


def clip_score(images, prompts, *, weights, model: str = "ViT-B-32", device: str = "cpu") -> float:
    """Mean cosine similarity of each image with its prompt under CLIP (Table 2), from a local weights file."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"clip weights: no file at {path}; download the open_clip checkpoint for "
                                f"{model} on a machine with network access")
    torch = _require("torch")
    open_clip = _require("open_clip")
    from PIL import Image

    net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=str(path), device=device)
    tokenizer = open_clip.get_tokenizer(model)
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.fromarray(im)) for im in np.asarray(images)]).to(device)
        image_emb = net.encode_image(pixels)
        text_emb = net.encode_text(tokenizer(list(prompts)).to(device))
    image_emb = image_emb / image_emb.norm(dim=-1, keepdim=True)
    text_emb = text_emb / text_emb.norm(dim=-1, keepdim=True)
    return float((image_emb * text_emb).sum(-1).mean())
