"""aMUSEd (Patil et al., 2024), the open Muse-style weights, run through muse_mini's own decoding and editing.

A diffusers ``AmusedPipeline`` folder (``model_index.json`` beside ``transformer/``, ``vqvae/``,
``text_encoder/``, ``tokenizer/``) loads into Equinox modules: CLIP-L/14 text (its penultimate states and pooled
``text_embeds``), the U-ViT transformer, the f16 VQ-GAN. :class:`AmusedPipeline` is a
:class:`~muse_mini.pipeline.Pipeline`, so ``generate``, ``inpaint``, ``outpaint``, ``edit`` and the widgets are
the same code paths as for Muse (§2.7, §2.8, §3.3). Differences from Muse: CLIP instead of T5, a U-ViT with
micro-conditioning (image size, crop, aesthetic score) instead of a plain transformer, and no super-res cascade.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from muse_mini.config import EditConfig, SamplerConfig
from muse_mini.hub import hub_offline
from muse_mini.models.amused.uvit import load_uvit
from muse_mini.models.amused.vq import AmusedVQ, load_amused_vq
from muse_mini.models.text.clip import load_clip_text, tokenize_clip
from muse_mini.pipeline import Pipeline

COMPONENTS = ("transformer", "vqvae", "text_encoder", "tokenizer")
# The files a Hub download fetches: configs, the tokenizer and the fp32 safetensors (no .bin, no fp16 copies).
HUB_FILES = ["model_index.json", "*/config.json", "scheduler/*.json", "tokenizer/*",
             "transformer/diffusion_pytorch_model.safetensors", "vqvae/diffusion_pytorch_model.safetensors",
             "text_encoder/model.safetensors"]

#: aMUSEd's own sampling: 12 steps, cosine keep count, the choice temperature falling linearly from 2 to 0 and
#: constant guidance. diffusers' ``uncond + s·(cond − uncond)`` is eq. 1 with t = s − 1, so its default s = 10
#: is ``guidance=9``. Tokens are drawn at temperature 1, as its scheduler does.
AMUSED_SAMPLER = SamplerConfig(steps=12, schedule="cosine", temperature=1.0, top_k=None, choice_temperature=2.0,
                               guidance=9.0, guidance_schedule="constant", choice_anneal="amused")


@dataclasses.dataclass(frozen=True)
class AmusedSettings:
    """What :class:`~muse_mini.pipeline.Pipeline` reads of a config, for aMUSEd: the samplers and editing."""

    sampler: SamplerConfig = AMUSED_SAMPLER
    edit: EditConfig = EditConfig(iterations=30, resample_fraction=0.08, top_k=None, guidance=4.0)
    superres_sampler: SamplerConfig | None = None


class AmusedCodec(eqx.Module):
    """:class:`~muse_mini.models.amused.vq.AmusedVQ` behind muse_mini's tokenizer interface (channels-last
    images in [-1, 1], ``image_size``, ``grid``), so ``models.codec`` and the editing code use it unchanged."""

    vq: AmusedVQ
    image_size: int = eqx.field(static=True)

    @property
    def grid(self) -> int:
        return self.image_size // self.vq.factor

    @property
    def quantizer(self) -> Any:
        return self.vq  # ``codebook_size`` is what codec reads

    def encode(self, img_HxWx3):
        return self.vq.encode(jnp.moveaxis((img_HxWx3 + 1.0) / 2.0, -1, 0))

    def decode_ids(self, ids_hxw):
        return jnp.moveaxis(self.vq.decode(ids_hxw), 0, -1) * 2.0 - 1.0


@eqx.filter_jit
def _encode_ids(clip, ids_BxT):
    return jax.vmap(clip)(ids_BxT)


class ClipPrompts:
    """Prompts → ``(hidden_BxTxE, pooled_BxP)``: CLIP's penultimate states and projected EOS embedding, as aMUSEd
    conditions on them; encodings are kept in memory, so the empty prompt of guidance is encoded once."""

    def __init__(self, clip, tokenizer):
        self.clip, self.tokenizer, self._seen = clip, tokenizer, {}

    def encode(self, prompts: list[str]):
        new = [p for p in dict.fromkeys(prompts) if p not in self._seen]
        if new:
            hidden, pooled = _encode_ids(self.clip, jnp.asarray(tokenize_clip(self.tokenizer, new)))
            self._seen.update({p: (hidden[i], pooled[i]) for i, p in enumerate(new)})
        return tuple(jnp.stack([self._seen[p][j] for p in prompts]) for j in (0, 1))


def is_amused_folder(path) -> bool:
    """True for a folder whose ``model_index.json`` names diffusers' ``AmusedPipeline``."""
    index = Path(path) / "model_index.json"
    return index.is_file() and json.loads(index.read_text()).get("_class_name") == "AmusedPipeline"


def resolve_amused(name_or_path) -> Path:
    """A local aMUSEd folder, or a Hub repo id (``amused/amused-256``) downloaded once, when online."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        if not is_amused_folder(path):
            raise FileNotFoundError(f"name_or_path: {path} is not an aMUSEd folder (expected a model_index.json "
                                    "naming AmusedPipeline, as in amused/amused-256 on the Hub)")
        missing = [c for c in COMPONENTS if not (path / c).is_dir()]
        if missing:
            raise FileNotFoundError(f"name_or_path: {path} lacks {', '.join(missing)}/ (expected {COMPONENTS})")
        return path
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"name_or_path: {text!r} is neither a folder nor a Hub repo id 'owner/name'")
    if hub_offline():
        raise FileNotFoundError(f"name_or_path: {text!r} is not a local folder and the Hub is offline "
                                f"(HF_HUB_OFFLINE); download it once with `huggingface-cli download {text}`")
    from huggingface_hub import snapshot_download  # only when a Hub id is asked for

    return resolve_amused(snapshot_download(repo_id=text, allow_patterns=HUB_FILES))


@dataclasses.dataclass
class AmusedPipeline(Pipeline):
    """aMUSEd-256/512 as a :class:`~muse_mini.pipeline.Pipeline`: ``base`` is the U-ViT, ``tokenizer`` the VQ-GAN
    (as an :class:`AmusedCodec`), ``text_encoder`` CLIP; ``micro_conds`` are (width, height, crop top, crop left,
    aesthetic score), diffusers' defaults."""

    micro_conds: tuple = ()

    @classmethod
    def from_pretrained(cls, name_or_path, *, dtype=jnp.float32, mesh=None, **_) -> "AmusedPipeline":
        folder = resolve_amused(name_or_path)
        transformer = load_uvit(folder / "transformer", dtype=dtype)
        vq = load_amused_vq(folder / "vqvae", dtype=dtype)
        clip = load_clip_text(folder / "text_encoder", dtype=dtype)
        from transformers import CLIPTokenizer  # slow to import; only loading needs it

        side = transformer.grid[0] * vq.factor
        codec = AmusedCodec(vq, side)
        return cls(AmusedSettings(), ClipPrompts(clip, CLIPTokenizer.from_pretrained(folder / "tokenizer")), codec,
                   transformer, mesh=mesh, micro_conds=(side, side, 0, 0, 6))

    def encode(self, prompts: list[str]):
        """``(hidden, pooled, micro_conds)`` per prompt: the U-ViT's condition."""
        hidden, pooled = self.text_encoder.encode(list(prompts))
        micro = jnp.broadcast_to(jnp.asarray(self.micro_conds, jnp.float32), (len(prompts), 5))
        return hidden.astype(jnp.float32), pooled.astype(jnp.float32), micro

    def guidance_contexts(self, context, negative_prompt: str | None = None):
        """ℓu from ``negative_prompt`` or, as aMUSEd does, the empty prompt ("" encoded by CLIP, not zeros)."""
        hidden, pooled, _ = self.encode([negative_prompt or ""])
        rows = context[0].shape[0]
        uncond = (jnp.broadcast_to(hidden, (rows, *hidden.shape[1:])), jnp.broadcast_to(pooled, (rows, pooled.shape[1])),
                  context[2])
        return self.on_mesh((context, uncond))


def load_any(source, **options) -> Pipeline:
    """What the CLI's ``--run`` names: an aMUSEd folder (or Hub id whose index says so), else :meth:`Pipeline.load <muse_mini.pipeline.Pipeline.load>`."""
    text = os.fspath(source)
    if is_amused_folder(Path(text).expanduser()) or _hub_amused(text):
        if options.get("ema"):
            raise ValueError(f"ema: {text} holds aMUSEd's released weights; EMA applies to runs trained here")
        return AmusedPipeline.from_pretrained(text, mesh=options.get("mesh"))
    return Pipeline.load(source, **options)


def _hub_amused(text: str) -> bool:
    """A Hub id (when online) whose ``model_index.json`` names AmusedPipeline."""
    if Path(text).expanduser().exists() or text.count("/") != 1 or text.startswith((".", "/", "~")) or hub_offline():
        return False
    from huggingface_hub import hf_hub_download

    try:
        return is_amused_folder(Path(hf_hub_download(repo_id=text, filename="model_index.json")).parent)
    except Exception:  # noqa: BLE001 -- not a diffusers repo: Pipeline.load says what it expected
        return False

