"""Parameter counts per component under :func:`equinox.filter_eval_shape`: no weight is allocated, so the 3B preset answers in seconds."""

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


# --------------------------------------------------------------------------
# Training FLOPs (the MFU convention: matrix products only, no recompute)


def _matmul(rows: int, d_in: int, d_out: int) -> float:
    return 2.0 * rows * d_in * d_out


def _block_flops(T: int, S: int, D: int, F: int, *, cross: bool) -> float:
    """One block's forward matrix products over ``T`` tokens (cross-attending to ``S`` positions)."""
    flops = _matmul(T, D, 4 * D) + 2 * _matmul(T, D, T)  # q, k, v, o; scores and values
    if cross:
        flops += _matmul(T, D, 2 * D) + _matmul(S, D, 2 * D) + 2 * _matmul(T, D, S)
    return flops + _matmul(T, D, F) + _matmul(T, F, D)  # MLP


def train_flops_per_example(cfg: MuseConfig, stage: str = "base") -> float:
    """Training FLOPs of one example: 3 × the forward pass's matrix products (the MFU convention).

    Base: self-attention over the image tokens and cross-attention to the text. Super-res (§2.4):
    the low-res encoder, then high-res layers cross-attending to it and the text.
    """
    S = cfg.text.max_length
    if stage == "base":
        m, T, V = cfg.base, cfg.tokenizer.grid ** 2, cfg.tokenizer.codebook_size
        encoder, context = 0.0, S
    elif stage == "superres":
        m, T, V = cfg.superres, cfg.highres_tokenizer.grid ** 2, cfg.highres_tokenizer.codebook_size
        low = cfg.tokenizer.grid ** 2
        encoder = m.lowres_depth * _block_flops(low, 0, m.width, m.mlp_dim, cross=False)
        context = low + S
    else:
        raise ValueError(f"stage: expected 'base' or 'superres', got {stage!r}")
    D = m.width
    layers = m.depth * _block_flops(T, context, D, m.mlp_dim, cross=True)
    head = _matmul(T, D, D) + _matmul(T, D, V)
    return 3.0 * (_matmul(S, cfg.text.width, D) + encoder + layers + head)
