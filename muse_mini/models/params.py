"""Parameter counts per component, without allocating a single weight.

Every component is built under :func:`equinox.filter_eval_shape`, which traces
the constructor and returns arrays as ``jax.ShapeDtypeStruct``; counting their
sizes costs nothing, so the 3B preset answers in seconds on a laptop. The
models come from :mod:`muse_mini.models.build`, the builders training uses.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax

from muse_mini.config import MuseConfig
from muse_mini.models.build import build_base, build_superres, build_tokenizer
from muse_mini.models.layers import count_params as count_leaves  # the one scalar count, real or abstract
from muse_mini.models.text.encoder import text_encoder_shapes


@dataclasses.dataclass(frozen=True)
class ComponentCount:
    name: str
    params: int
    note: str = ""


def _abstract(build, cfg: MuseConfig, *args):
    return eqx.filter_eval_shape(build, cfg, *args, jax.random.key(0))


def _tokenizer(cfg: MuseConfig, stage: str):
    tok = cfg.tokenizer if stage == "base" else cfg.highres_tokenizer
    note = (f"f={tok.downsample}, {tok.image_size}px -> {tok.grid}x{tok.grid} tokens, "
            f"codebook {tok.codebook_size}")
    return _abstract(build_tokenizer, cfg, stage), note


def _decoder(cfg: MuseConfig):
    """The §2.5 finetuned high-res decoder alone (it reuses the tokenizer's encoder and codebook)."""
    d = cfg.decoder
    note = f"finetuned, {d.res_blocks} blocks per resolution, {d.channels} base channels"
    return _abstract(build_tokenizer, cfg, "decoder").decoder, note


def _base(cfg: MuseConfig):
    b = cfg.base
    return _abstract(build_base, cfg), f"{b.depth} layers, width {b.width}, MLP {b.mlp_dim}"


def _superres(cfg: MuseConfig):
    s = cfg.superres
    note = f"{s.lowres_depth} low-res encoder + {s.depth} layers, width {s.width}, MLP {s.mlp_dim}"
    return _abstract(build_superres, cfg), note


COMPONENTS = {
    "text_encoder": lambda cfg: (text_encoder_shapes(cfg.text.encoder), f"frozen, {cfg.text.encoder}"),
    "tokenizer": lambda cfg: _tokenizer(cfg, "base"),
    "highres_tokenizer": lambda cfg: _tokenizer(cfg, "highres"),
    "base": _base,
    "superres": _superres,
    "decoder": _decoder,
}


def count_params(cfg: MuseConfig) -> list[ComponentCount]:
    """Count each component of ``cfg``."""
    counts = []
    for name, build in COMPONENTS.items():
        module, note = build(cfg)
        counts.append(ComponentCount(name, count_leaves(module), note))
    return counts


def format_counts(counts: list[ComponentCount]) -> str:
    return "\n".join(f"{c.name:<18} {c.params:>15,d}  ({_human(c.params)})  {c.note}".rstrip() for c in counts)


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
