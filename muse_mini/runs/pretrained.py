"""Pretrained pipelines as Hugging Face-style folders: one ``config.json`` and ``model.safetensors`` per stage.

The layout (what ``muse-mini export`` writes, and what ships as ``muse_mini/pretrained/shapes``)::

    model_index.json             stages, text encoder, evaluation figures, provenance
    README.md                    the model card
    tokenizer/                   base VQGAN (§2.2)
    base/                        base transformer (§2.3)
    highres_tokenizer/           high-res VQGAN (§2.4)
    superres/                    super-res transformer (§2.4)
    decoder/                     finetuned high-res decoder (§2.5), when trained

Reading one needs no training code, as with run directories.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import equinox as eqx
import jax
from safetensors.numpy import load_file

from muse_mini.config import MuseConfig, VQGANConfig, from_dict
from muse_mini.hub import hub_offline
from muse_mini.models.build import build_base, build_superres
from muse_mini.models.vqgan import VQGAN
from muse_mini.runs.weights import model_from_tensors

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
SHIPPED = ("shapes",)  # names of the pipelines inside the package
INDEX_FILE = "model_index.json"
STAGE_CONFIG = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "muse_mini.pretrained"
STAGES = ("tokenizer", "base", "highres_tokenizer", "superres", "decoder")
HUB_FILES = [INDEX_FILE, "README.md", f"*/{STAGE_CONFIG}", f"*/{WEIGHTS_FILE}"]


def is_pretrained_folder(path) -> bool:
    return (Path(path) / INDEX_FILE).is_file()


def names_pretrained(source) -> bool:
    """Whether ``source`` means a pretrained pipeline (a shipped name first, then an export folder or a Hub id)
    rather than a run directory: ``"shapes"`` is the shipped one even beside a folder of that name (``./shapes``)."""
    text = os.fspath(source)
    return text in SHIPPED or is_pretrained_folder(text) or not Path(text).expanduser().is_dir()


def resolve_pretrained(name_or_path) -> Path:
    """The folder of a shipped name, a local folder, or a Hub repo id (downloaded once, when online)."""
    text = os.fspath(name_or_path)
    if text in SHIPPED:
        return SHIPPED_DIR / text
    path = Path(text).expanduser()
    if path.is_dir():
        if not is_pretrained_folder(path):
            raise FileNotFoundError(f"name_or_path: {path} has no {INDEX_FILE}; expected a folder written by "
                                    "`muse-mini export` (a run directory loads with Pipeline.from_run)")
        return path
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"name_or_path: {text!r} is not a shipped pipeline ({', '.join(SHIPPED)}), "
                                "a folder, or a Hub repo id 'owner/name'")
    if hub_offline():
        raise FileNotFoundError(f"name_or_path: {text!r} is not a local folder and the Hub is offline "
                                f"(HF_HUB_OFFLINE); the shipped pipelines are {', '.join(SHIPPED)}")
    from huggingface_hub import snapshot_download  # only when a Hub id is asked for

    return Path(snapshot_download(repo_id=text, allow_patterns=HUB_FILES))


def read_index(folder) -> dict:
    path = Path(folder) / INDEX_FILE
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable {INDEX_FILE} ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{path}: expected format {FORMAT!r}, got {index.get('format') if isinstance(index, dict) else index!r}")
    return index


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stage_config(folder: Path, stage: str):
    path = folder / stage / STAGE_CONFIG
    try:
        stored = json.loads(path.read_text())
        cls = VQGANConfig if stored["class"] == "VQGAN" else MuseConfig
        return stored["class"], from_dict(cls, stored["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a stage config this version of muse_mini reads ({e})") from None


def _skeleton(kind: str, cfg):
    build = {"VQGAN": lambda k: VQGAN(cfg, key=k), "BaseTransformer": lambda k: build_base(cfg, k),
             "SuperResTransformer": lambda k: build_superres(cfg, k)}
    if kind not in build:
        raise ValueError(f"stage class: expected one of {sorted(build)}, got {kind!r}")
    return eqx.filter_eval_shape(build[kind], jax.random.key(0))


def load_stage(folder, stage: str):
    """``(model, config)`` of one stage of a pretrained folder; its sha256 is checked against the index."""
    folder = Path(folder)
    entry = read_index(folder)["stages"].get(stage)
    if entry is None:
        raise FileNotFoundError(f"{folder}: no {stage!r} stage (it has {', '.join(read_index(folder)['stages'])})")
    weights = folder / entry["path"] / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: {stage} has no {weights.relative_to(folder)}")
    if file_sha256(weights) != entry["sha256"]:
        raise ValueError(f"{weights}: sha256 differs from {INDEX_FILE}'s: the file is corrupt or was replaced")
    kind, cfg = _stage_config(folder, entry["path"])
    model = model_from_tensors(_skeleton(kind, cfg), load_file(weights), where=str(weights))
    return model, cfg
