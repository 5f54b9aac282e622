"""Configuration: frozen dataclasses for every component, and named presets.

One code path from the laptop to the paper: the ``toy`` preset (Shapes, CPU
minutes), ``cc3m`` (Muse Table 1: 632M base + 268M super-res) and ``paper-3b``
(Muse Tables 4-6) differ only in numbers. Components read the sizes they share
from each other (the transformer's vocabulary is its tokenizer's codebook, its
sequence length is the tokenizer's grid), so an override of one stays
consistent everywhere.

Overrides use dotted paths, from Python or the command line::

    cfg = get_preset("toy", overrides=["base.depth=4", "sampler.steps=8"])
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TextConfig:
    """The frozen text encoder (Muse §2.1).

    ``encoder`` is ``"minilm"`` (the offline default, all-MiniLM-L6-v2), a local
    Hugging Face directory, or a hub name such as ``google/t5-v1_1-xxl``.
    ``width`` is the encoder's output width; the transformers project it to
    their own hidden size.
    """

    encoder: str = "minilm"
    width: int = 384
    max_length: int = 24


@dataclass(frozen=True)
class VQGANConfig:
    """A VQGAN tokenizer (Muse §2.2, §A.2, Table 5).

    The downsampling factor is ``f = 2 ** (len(channel_mult) - 1)``; an image of
    side ``image_size`` becomes a ``grid × grid`` token map with
    ``grid = image_size // f``. ``decoder_*`` fields size the finetunable decoder
    (§2.5: more residual blocks and channels, encoder and codebook frozen).
    """

    image_size: int = 256
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    codebook_size: int = 8192
    code_dim: int = 256
    commitment_weight: float = 0.25
    perceptual_weight: float = 0.05
    adversarial_weight: float = 0.1
    adversarial_start: int = 20_000
    disc_channels: int = 64
    disc_layers: int = 3
    perceptual: str = "vgg16"  # "vgg16" (LPIPS-style, needs perceptual_weights) or "none"
    perceptual_weights: str = "timm/vgg16.tv_in1k"  # local .safetensors or hub repo name
    decoder_channels: int = 128
    decoder_res_blocks: int = 2
    code_normalize: bool = True  # l2-normalised codes (ViT-VQGAN); see muse_mini.models.quantizer
    restart_every: int = 100  # restart codes unused over this many steps; 0: never
    l1_weight: float = 0.0  # adds an L1 term to the L2 reconstruction loss (sharper edges)
    train_crop: int = 0  # train on random crops of this side (0: whole images); encodes any size
    encoder: str = "full"  # "full": the paper's VQGAN encoder; "local": small receptive field, white → one code

    def __post_init__(self):
        if self.encoder not in ("full", "local"):
            raise ValueError(f"VQGANConfig.encoder: expected 'full' or 'local', got {self.encoder!r}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def grid(self) -> int:
        return self.image_size // self.downsample


POSITION_INITS = ("normal", "sincos")  # how the learned position table starts (muse_mini.models.transformer)


@dataclass(frozen=True)
class TransformerConfig:
    """The base masked transformer (Muse §2.3, Table 4).

    Blocks are self-attention over image tokens, cross-attention to the
    projected text, then an MLP. ``dtype`` is the compute dtype; parameters stay
    float32. ``cond_drop`` is the classifier-free-guidance dropout (§2.7).
    ``remat`` recomputes each layer's activations in the backward pass
    (``jax.checkpoint``), trading compute for memory at large sizes. On
    XLA:CPU it is also faster: without it the layer scan stacks every
    layer's saved activations into ``depth``-long buffers, and those copies
    cost more than recomputing the forward pass (the toy base step at batch
    32 takes 0.26 s with remat, 0.36 s without; docs/results.md).
    """

    depth: int = 48
    width: int = 2048
    mlp_dim: int = 8192
    num_heads: int = 32
    dropout: float = 0.0
    cond_drop: float = 0.1
    dtype: str = "float32"
    remat: bool = False
    pos_init: str = "normal"  # or "sincos": how the learned 2D position table starts (muse_mini.models.transformer)

    def __post_init__(self):
        if self.pos_init not in POSITION_INITS:
            raise ValueError(f"{type(self).__name__}.pos_init: expected one of {POSITION_INITS}, got {self.pos_init!r}")


LOWRES_INPUTS = ("tokens", "pixels")  # how super-res embeds the low-res tokens (muse_mini.models.superres)


@dataclass(frozen=True)
class SuperResConfig(TransformerConfig):
    """The super-resolution token translator (Muse §2.4, Figure 4, Table 6).

    ``lowres_depth`` self-attention layers encode the low-res tokens; their
    output is concatenated with the projected text and cross-attended to.
    ``lowres_skip`` also adds each low-res output to the input embeddings of
    the high-res tokens it covers, and ``lowres_input="pixels"`` embeds the
    low-res tokens through the frozen low-res decoder (neither is in the
    paper; see :mod:`muse_mini.models.superres`).
    """

    depth: int = 32
    width: int = 1024
    mlp_dim: int = 4096
    num_heads: int = 16
    lowres_depth: int = 16
    lowres_skip: bool = False
    lowres_input: str = "tokens"  # or "pixels"
    lowres_margin: int = 0  # "pixels": each patch also sees this many neighbouring pixels per side

    def __post_init__(self):
        super().__post_init__()
        if self.lowres_input not in LOWRES_INPUTS:
            raise ValueError(f"superres.lowres_input: expected one of {LOWRES_INPUTS}, got {self.lowres_input!r}")
        if self.lowres_margin < 0 or (self.lowres_margin and self.lowres_input != "pixels"):
            raise ValueError(f"superres.lowres_margin: expected 0, or a positive margin with lowres_input='pixels', "
                             f"got {self.lowres_margin} with {self.lowres_input!r}")


@dataclass(frozen=True)
class TrainConfig:
    """One stage's optimisation (Muse Tables 4-6; shared trainer)."""

    steps: int = 1_000_000
    batch_size: int = 512
    optimizer: str = "adafactor"
    lr: float = 1e-4
    b1: float = 0.9
    b2: float = 0.96
    weight_decay: float = 0.045
    warmup_steps: int = 5000
    clip_norm: float | None = None
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 10
    keep_checkpoints: int = 3


@dataclass(frozen=True)
class SamplerConfig:
    """Iterative parallel decoding (Muse §2.7-2.8).

    ``guidance`` is t in ℓg = (1 + t)ℓc − t·ℓu; with ``guidance_schedule =
    "linear"`` it rises from 0 to ``guidance`` over the steps (the paper's
    choice). ``choice_temperature`` scales the confidence noise (MaskGIT).
    """

    steps: int = 24
    schedule: str = "cosine"
    temperature: float = 1.0
    top_k: int | None = None
    choice_temperature: float = 4.5
    guidance: float = 4.0
    guidance_schedule: str = "linear"


@dataclass(frozen=True)
class DataConfig:
    """Training data: ``shapes`` (built in) or any image-text dataset."""

    source: str = "shapes"
    num_examples: int = 20_000
    seed: int = 0
    image_column: str = "image"
    caption_column: str = "caption"
    paraphrase_prob: float = 0.0
    # Shapes scene kinds, in turn (example i has kind kinds[i % len(kinds)]):
    # repeating a kind gives it a larger share of the data. Other sources ignore it.
    kinds: tuple[str, ...] = ("single", "placed", "count", "relation")

    def __post_init__(self):
        from muse_mini.data.shapes import check_kinds

        try:
            check_kinds(self.kinds)
        except ValueError as e:
            raise ValueError(f"data.kinds: {e} (repeats set the mix)") from None


@dataclass(frozen=True)
class DecoderConfig:
    """The finetuned high-res decoder (Muse §2.5, §A.2).

    A larger decoder (§A.2: 4 residual blocks per resolution and 256 base
    channels, against the tokenizer's 2 and 128) is trained on the high-res
    tokenizer's frozen encoder and codebook, after the transformers, so the
    token "language" is unchanged. With ``enabled=False`` the pipeline decodes
    with the high-res tokenizer's own decoder.
    """

    enabled: bool = True
    channels: int = 256
    res_blocks: int = 4


TOKENIZER_STAGES = ("base", "highres", "decoder")


def tokenizer_stage_config(cfg: "MuseConfig", stage: str) -> VQGANConfig:
    """A tokenizer stage's model: ``base`` → ``cfg.tokenizer``; ``highres`` →
    ``cfg.highres_tokenizer``; ``decoder`` → the high-res tokenizer with
    ``cfg.decoder``'s larger decoder (§2.5)."""
    if stage not in TOKENIZER_STAGES:
        raise ValueError(f"stage: expected one of {TOKENIZER_STAGES}, got {stage!r}")
    if stage == "base":
        return cfg.tokenizer
    if stage == "decoder":
        return dataclasses.replace(cfg.highres_tokenizer, decoder_channels=cfg.decoder.channels,
                                   decoder_res_blocks=cfg.decoder.res_blocks)
    return cfg.highres_tokenizer


def _paper_vqgan_train() -> TrainConfig:
    """Table 5's VQGAN optimiser: Adam β = (0.9, 0.99), weight decay 1e-4, cosine decay."""
    return TrainConfig(
        steps=1_000_000, batch_size=256, optimizer="adam", b2=0.99,
        weight_decay=1e-4, warmup_steps=10_000,
    )


@dataclass(frozen=True)
class MuseConfig:
    """The whole pipeline: text encoder, two tokenizers, base, super-res, finetuned decoder."""

    name: str = "custom"
    text: TextConfig = field(default_factory=TextConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: VQGANConfig = field(default_factory=VQGANConfig)
    highres_tokenizer: VQGANConfig = field(
        default_factory=lambda: VQGANConfig(image_size=512, channel_mult=(1, 1, 2, 4))
    )
    base: TransformerConfig = field(default_factory=TransformerConfig)
    superres: SuperResConfig = field(default_factory=SuperResConfig)
    tokenizer_train: TrainConfig = field(default_factory=_paper_vqgan_train)
    # The two tokenizers train separately (§2.2), each on its own schedule.
    highres_tokenizer_train: TrainConfig = field(default_factory=_paper_vqgan_train)
    base_train: TrainConfig = field(default_factory=TrainConfig)
    superres_train: TrainConfig = field(default_factory=TrainConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    superres_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=8))
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    decoder_train: TrainConfig = field(default_factory=_paper_vqgan_train)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# --------------------------------------------------------------------------
# Presets

T5_XXL = TextConfig(encoder="google/t5-v1_1-xxl", width=4096, max_length=128)


def _toy() -> MuseConfig:
    """Shapes on a laptop CPU: 32×32 → 8×8 base tokens, 64×64 → 16×16 high-res.

    Sizes come from measured sweeps on a 2-core CPU (docs/results.md): tiny
    convolutional tokenizers with 8-dim l2-normalised codes and frequent
    dead-code restarts reconstruct Shapes well enough for the evaluator; the
    high-res tokenizer trains on 32×32 crops (it is fully convolutional, §2.2).
    No pretrained VGG can be downloaded offline, so ``perceptual="none"``: the
    toy tokenizers train on reconstruction and codebook losses only.

    Three measured departures from the paper's architecture, all off in the
    paper presets: the high-res tokenizer uses the local encoder (every white
    cell one code, so super-res does not have to guess among ~100 "whites"),
    super-res adds the low-res features to its input embeddings
    (``lowres_skip``), and it sees the low-res tokens as the patches they
    decode to (``lowres_input="pixels"``; the full recipe widens each patch by
    2 pixels of its neighbours, ``lowres_margin=2``). The base tokenizer keeps the paper's encoder: with the
    local one the base model's samples collapse to blank images
    (docs/results.md). Step counts fit the quick recipe's time budget.
    """
    tok = VQGANConfig(
        image_size=32, base_channels=8, channel_mult=(1, 4, 8), num_res_blocks=1,
        codebook_size=256, code_dim=8, perceptual="none", adversarial_weight=0.0,
        adversarial_start=0, disc_channels=32, disc_layers=2, restart_every=20,
        decoder_channels=8, decoder_res_blocks=1,
    )
    tok_train = TrainConfig(
        steps=2400, batch_size=8, optimizer="adam", lr=3e-3, b2=0.99,
        weight_decay=1e-4, warmup_steps=100, clip_norm=None,
        checkpoint_every=400, log_every=10,
    )
    return MuseConfig(
        name="toy",
        # The longest canonical caption is 10 MiniLM tokens; every padding
        # position costs cross-attention time (masked keys are slow on CPU).
        text=TextConfig(encoder="minilm", width=384, max_length=16),
        # A third each of count and relation scenes (a sixth each of single and
        # placed): with the uniform mix the 2-layer model never learned which
        # colour goes with which object in the quick recipe's steps (relation
        # 3%); with this one it does (66%; docs/results.md).
        data=DataConfig(source="shapes", num_examples=20_000,
                        kinds=("single", "placed", "count", "relation", "count", "relation")),
        tokenizer=tok,
        highres_tokenizer=dataclasses.replace(tok, image_size=64, train_crop=32, encoder="local"),
        # remat: faster on CPU, see TransformerConfig. Two layers: a step costs
        # 0.58 of a 4-layer one on the CPU, and in the quick recipe's few
        # minutes more steps beat more depth (docs/results.md; the full
        # recipe has the time for 4 layers). A 2x MLP (not 4x) learns as much
        # per step and steps faster; sincos-initialised positions lower the loss.
        base=TransformerConfig(depth=2, width=128, mlp_dim=256, num_heads=4, remat=True, pos_init="sincos"),
        superres=SuperResConfig(
            depth=2, width=128, mlp_dim=256, num_heads=4, lowres_depth=1, lowres_skip=True,
            lowres_input="pixels", remat=True,
        ),
        # The base tokenizer needs 2400 steps for the evaluator to accept 98%
        # of its reconstructions; the high-res one gets there in 1200.
        tokenizer_train=tok_train,
        highres_tokenizer_train=dataclasses.replace(tok_train, steps=1200),
        base_train=TrainConfig(
            steps=7200, batch_size=32, optimizer="adamw", lr=2e-3, b2=0.99,
            weight_decay=0.045, warmup_steps=300, clip_norm=1.0,
            checkpoint_every=200, log_every=10,
        ),
        # 1000 steps: with 500, super-res lost 9 points of the base model's
        # caption accuracy (shapes blur into circles); with 1000, 1 point.
        superres_train=TrainConfig(
            steps=1000, batch_size=16, optimizer="adamw", lr=2e-3, b2=0.99,
            weight_decay=0.045, warmup_steps=50, clip_norm=1.0,
            checkpoint_every=200, log_every=10,
        ),
        sampler=SamplerConfig(
            steps=12, temperature=0.2, choice_temperature=1.0, guidance=2.0,
        ),
        superres_sampler=SamplerConfig(
            steps=8, temperature=0.2, choice_temperature=1.0, guidance=0.0,
        ),
        # §A.2's ratio: twice the tokenizer decoder's channels and blocks. It
        # trains from scratch and needs about 2400 steps (5.4 min) to beat the
        # tokenizer's own decoder, more than the quick recipe has left, so only
        # the full recipe enables it (docs/results.md).
        decoder=DecoderConfig(enabled=False, channels=16, res_blocks=2),
        decoder_train=dataclasses.replace(tok_train, steps=2400),
    )


def _cc3m() -> MuseConfig:
    """Muse Table 1's CC3M model: 632M base + 268M super-res.

    The paper states only the totals. We keep Table 4's 4× MLP ratio (MLP =
    4 × width), 64-dim heads and T5-XXL text, and choose base width 1280 ×
    depth 23 (631.7M parameters) and super-res width 1024 with 5 low-res
    encoder + 10 high-res layers — Table 6's 1:2 encoder:decoder ratio —
    (265.8M); tests/test_transformer.py and tests/test_superres.py check the
    totals to ±5%, and `muse-mini params` prints them. Both compute in
    bfloat16 with per-layer rematerialisation: on one H100 the base model's
    training step at batch 64 needs ~12 GiB with remat and does not fit in
    80 GB without it (every layer's saved activations).
    """
    cfg = _paper3b()
    return dataclasses.replace(
        cfg,
        name="cc3m",
        base=TransformerConfig(depth=23, width=1280, mlp_dim=5120, num_heads=20, dtype="bfloat16", remat=True),
        superres=SuperResConfig(
            depth=10, width=1024, mlp_dim=4096, num_heads=16, lowres_depth=5, dtype="bfloat16", remat=True,
        ),
    )


def _paper3b() -> MuseConfig:
    """Muse-3B: Table 4 base, Table 5 / §A.2 VQGAN, Table 6 super-res, T5-XXL."""
    return MuseConfig(
        name="paper-3b",
        text=T5_XXL,
        data=DataConfig(source="", num_examples=0),
        tokenizer=VQGANConfig(image_size=256, channel_mult=(1, 1, 2, 2, 4)),
        highres_tokenizer=VQGANConfig(image_size=512, channel_mult=(1, 1, 2, 4)),
        base=TransformerConfig(
            depth=48, width=2048, mlp_dim=8192, num_heads=32, dtype="bfloat16", remat=True,
        ),
        superres=SuperResConfig(
            depth=32, width=1024, mlp_dim=4096, num_heads=16, lowres_depth=16, dtype="bfloat16", remat=True,
        ),
    )


PRESETS = {"toy": _toy, "cc3m": _cc3m, "paper-3b": _paper3b}


def get_preset(name: str, overrides: typing.Sequence[str] = ()) -> MuseConfig:
    """Return the named preset with ``overrides`` (``"section.field=value"``) applied."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return apply_overrides(PRESETS[name](), overrides)


# --------------------------------------------------------------------------
# Overrides and (de)serialisation


def _parse_value(text: str, typ, where: str):
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse_value(text, inner[0], where)
    if typ is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"{where}: expected true/false, got {text!r}")
    if origin is tuple:
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        return tuple(_parse_value(p.strip(), args[0], where) for p in parts)
    try:
        return typ(text)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected {getattr(typ, '__name__', typ)}, got {text!r}") from None


def _field_types(obj) -> dict:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def apply_overrides(cfg, overrides: typing.Sequence[str]):
    """Apply ``"a.b=value"`` overrides to a frozen dataclass tree, type-checked."""
    for item in overrides:
        item = item.removeprefix("--")
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected the form section.field=value")
        path, text = item.split("=", 1)
        cfg = _replace_path(cfg, path.split("."), text, path)
    return cfg


def _replace_path(obj, keys, text, full):
    types = _field_types(obj)
    key = keys[0]
    if key not in types:
        raise ValueError(
            f"override {full!r}: {type(obj).__name__} has no field {key!r}; "
            f"fields are {sorted(types)}"
        )
    if len(keys) == 1:
        if dataclasses.is_dataclass(getattr(obj, key)):
            raise ValueError(f"override {full!r}: {key!r} is a section; name one of its fields")
        value = _parse_value(text, types[key], f"override {full!r}")
    else:
        value = _replace_path(getattr(obj, key), keys[1:], text, full)
    return dataclasses.replace(obj, **{key: value})


def from_dict(cls, data: dict):
    """Rebuild a (nested) config dataclass from :func:`dataclasses.asdict` output."""
    types = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, typ = data[f.name], types[f.name]
        if dataclasses.is_dataclass(typ):
            value = from_dict(typ, value)
        elif typing.get_origin(typ) is tuple:
            value = tuple(value)
        kwargs[f.name] = value
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**kwargs)


def load_config(path) -> MuseConfig:
    """Read a ``config.json`` written by :meth:`MuseConfig.to_json`."""
    with open(path) as f:
        return from_dict(MuseConfig, json.load(f))
