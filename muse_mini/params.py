"""Parameter counts per component, without allocating a single weight.

Every component is built under :func:`equinox.filter_eval_shape`, which traces
the constructor and returns arrays as ``jax.ShapeDtypeStruct``; counting their
sizes costs nothing, so the 3B preset answers in seconds on a laptop.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax

from muse_mini.config import MuseConfig


@dataclasses.dataclass(frozen=True)
class ComponentCount:
    name: str
    params: int | None
    note: str = ""


def count_leaves(tree) -> int:
    """Number of scalars in the array leaves of ``tree`` (real or abstract)."""
    # Abstract leaves are jax.ShapeDtypeStruct, which is not "array-like": count by shape.
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree) if hasattr(x, "shape"))


def _abstract(build, *args, **kwargs):
    return eqx.filter_eval_shape(build, *args, **kwargs, key=jax.random.key(0))


def _text_encoder(cfg: MuseConfig):
    from muse_mini.text import text_encoder_shapes

    return text_encoder_shapes(cfg.text.encoder), f"frozen, {cfg.text.encoder}"


def _tokenizer(tok_cfg):
    from muse_mini.vqgan import VQGAN

    f = tok_cfg.downsample
    note = f"f={f}, {tok_cfg.image_size}px -> {tok_cfg.grid}x{tok_cfg.grid} tokens, codebook {tok_cfg.codebook_size}"
    return _abstract(VQGAN, tok_cfg), note


def _decoder(cfg: MuseConfig):
    """The §2.5 finetuned high-res decoder alone (it reuses the tokenizer's encoder and codebook)."""
    from muse_mini.tokenizer_stage import stage_config
    from muse_mini.vqgan import VQGAN

    d = cfg.decoder
    note = f"finetuned, {d.res_blocks} blocks per resolution, {d.channels} base channels"
    return _abstract(VQGAN, stage_config(cfg, "decoder")[0]).decoder, note


def _base(cfg: MuseConfig):
    from muse_mini.transformer import BaseTransformer

    b = cfg.base
    module = _abstract(
        BaseTransformer, b, vocab_size=cfg.tokenizer.codebook_size,
        seq_len=cfg.tokenizer.grid ** 2, text_width=cfg.text.width,
    )
    return module, f"{b.depth} layers, width {b.width}, MLP {b.mlp_dim}"


def _superres(cfg: MuseConfig):
    from muse_mini.superres import SuperResTransformer

    s = cfg.superres
    module = _abstract(
        SuperResTransformer, s, vocab_size=cfg.highres_tokenizer.codebook_size,
        seq_len=cfg.highres_tokenizer.grid ** 2,
        lowres_vocab_size=cfg.tokenizer.codebook_size,
        lowres_seq_len=cfg.tokenizer.grid ** 2, text_width=cfg.text.width,
    )
    note = f"{s.lowres_depth} low-res encoder + {s.depth} layers, width {s.width}, MLP {s.mlp_dim}"
    return module, note


COMPONENTS = {
    "text_encoder": _text_encoder,
    "tokenizer": lambda cfg: _tokenizer(cfg.tokenizer),
    "highres_tokenizer": lambda cfg: _tokenizer(cfg.highres_tokenizer),
    "base": _base,
    "superres": _superres,
    "decoder": _decoder,
}


def count_params(cfg: MuseConfig) -> list[ComponentCount]:
    """Count each component of ``cfg``; unimplemented ones are named as such."""
    counts = []
    for name, build in COMPONENTS.items():
        try:
            module, note = build(cfg)
        except ModuleNotFoundError as err:
            if not (err.name or "").startswith("muse_mini"):
                raise
            counts.append(ComponentCount(name, None, "not implemented yet"))
            continue
        counts.append(ComponentCount(name, count_leaves(module), note))
    return counts


def format_counts(counts: list[ComponentCount]) -> str:
    lines = []
    for c in counts:
        shown = "not implemented yet" if c.params is None else f"{c.params:>15,d}  ({_human(c.params)})"
        lines.append(f"{c.name:<18} {shown}  {c.note if c.params is not None else ''}".rstrip())
    return "\n".join(lines)


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
