# long: one frozen dataclass per component, kept together so the whole config reads as one table.
"""The config dataclasses, one per component: frozen, each checking its fields in ``__post_init__``
so a bad value is a ``ValueError`` naming the field before any model is built."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from muse_mini.config.checks import check_int, check_number, check_seed


@dataclass(frozen=True)
class TextConfig:
    """The frozen text encoder (Muse §2.1): ``"minilm"`` (offline default), a local Hugging Face
    directory or a hub name such as ``google/t5-v1_1-xxl``; ``width`` is its output width."""

    encoder: str = "minilm"
    width: int = 384
    max_length: int = 24

    def __post_init__(self):
        check_int("text.width", self.width)
        check_int("text.max_length", self.max_length)


@dataclass(frozen=True)
class VQGANConfig:
    """A VQGAN tokenizer (Muse §2.2, §A.2, Table 5): ``grid = image_size // 2 ** (len(channel_mult) - 1)``;
    ``decoder_*`` size the finetunable decoder (§2.5)."""

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
        for name in ("image_size", "base_channels", "num_res_blocks", "codebook_size", "code_dim",
                     "disc_channels", "disc_layers", "decoder_channels", "decoder_res_blocks"):
            check_int(f"VQGANConfig.{name}", getattr(self, name))
        for name in ("adversarial_start", "restart_every", "train_crop"):
            check_int(f"VQGANConfig.{name}", getattr(self, name), minimum=0)
        for name in ("commitment_weight", "perceptual_weight", "adversarial_weight", "l1_weight"):
            check_number(f"VQGANConfig.{name}", getattr(self, name))
        if not self.channel_mult:
            raise ValueError("VQGANConfig.channel_mult: expected at least one channel multiplier, got ()")
        for m in self.channel_mult:
            check_int("VQGANConfig.channel_mult", m)
        if self.image_size % self.downsample:
            raise ValueError(f"VQGANConfig.image_size: expected a multiple of the downsampling factor "
                             f"{self.downsample} (2 ** (len(channel_mult) - 1)), got {self.image_size}")
        if self.train_crop and (self.train_crop > self.image_size or self.train_crop % self.downsample):
            raise ValueError(f"VQGANConfig.train_crop: expected 0, or a multiple of {self.downsample} "
                             f"no larger than image_size {self.image_size}, got {self.train_crop}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def grid(self) -> int:
        return self.image_size // self.downsample


POSITION_INITS = ("normal", "sincos")  # how the learned position table starts (muse_mini.models.transformer)
ATTENTION_KERNELS = ("xla", "cudnn")  # jax.nn.dot_product_attention implementations


@dataclass(frozen=True)
class TransformerConfig:
    """The base masked transformer (Muse §2.3, Table 4).

    ``dtype`` is the compute dtype (parameters stay float32); ``cond_drop`` the
    guidance dropout (§2.7). ``remat`` recomputes each layer in the backward
    pass: less memory at scale, and faster on XLA:CPU, where the layer scan's
    saved-activation copies cost more than recomputing. ``attention="cudnn"``
    is the fused GPU kernel for 16-bit unmasked self-attention.
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
    attention: str = "xla"  # or "cudnn": the fused GPU kernel (see above)

    def __post_init__(self):
        if self.pos_init not in POSITION_INITS:
            raise ValueError(f"{type(self).__name__}.pos_init: expected one of {POSITION_INITS}, got {self.pos_init!r}")
        if self.attention not in ATTENTION_KERNELS:
            raise ValueError(f"{type(self).__name__}.attention: expected one of {ATTENTION_KERNELS}, "
                             f"got {self.attention!r}")
        where = type(self).__name__
        for name in ("depth", "width", "mlp_dim", "num_heads"):
            check_int(f"{where}.{name}", getattr(self, name))
        if self.width % self.num_heads:
            raise ValueError(f"{where}.num_heads: expected a divisor of width {self.width}, got {self.num_heads}")
        check_number(f"{where}.dropout", self.dropout, high=1.0)
        check_number(f"{where}.cond_drop", self.cond_drop, high=1.0)


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
        check_int("SuperResConfig.lowres_depth", self.lowres_depth)
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
    # Also keep every checkpoint whose step is a multiple of this (0: none), for
    # the offline EMA of §3 (the paper averages checkpoints taken every 5000 steps).
    keep_every: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "keep_checkpoints"):
            check_int(f"TrainConfig.{name}", getattr(self, name))
        check_int("TrainConfig.keep_every", self.keep_every, minimum=0)
        check_int("TrainConfig.warmup_steps", self.warmup_steps, minimum=0)
        check_number("TrainConfig.lr", self.lr, low=0.0, low_open=True)
        check_number("TrainConfig.weight_decay", self.weight_decay)
        for name in ("b1", "b2"):
            check_number(f"TrainConfig.{name}", getattr(self, name), high=1.0)
        if self.clip_norm is not None:
            check_number("TrainConfig.clip_norm", self.clip_norm, low=0.0, low_open=True)
        check_seed("TrainConfig.seed", self.seed)


@dataclass(frozen=True)
class SamplerConfig:
    """Iterative parallel decoding (Muse §2.7-2.8): ``guidance`` is t in ℓg = (1 + t)ℓc − t·ℓu, rising
    from 0 over the steps when ``"linear"`` (the paper's); ``choice_temperature`` scales the confidence noise,
    annealed to 0 as MaskGIT does (``"maskgit"``) or from its full value at the first step (``"amused"``)."""

    steps: int = 24
    schedule: str = "cosine"
    temperature: float = 1.0
    top_k: int | None = None
    choice_temperature: float = 4.5
    guidance: float = 4.0
    guidance_schedule: str = "linear"
    choice_anneal: str = "maskgit"


@dataclass(frozen=True)
class EditConfig:
    """Mask-free editing (Muse §3.3.2): ``iterations`` rounds, each resampling ``resample_fraction`` of
    the tokens with top-k and constant ``guidance``. The paper's defaults; the toy preset's guidance is 0."""

    iterations: int = 100
    resample_fraction: float = 0.08
    top_k: int | None = 3
    guidance: float = 4.0
    temperature: float = 1.0

    def __post_init__(self):
        check_int("edit.iterations", self.iterations)
        check_number("edit.resample_fraction", self.resample_fraction, high=1.0, low_open=True)
        if self.top_k is not None:
            check_int("edit.top_k", self.top_k)
        if isinstance(self.guidance, bool) or not isinstance(self.guidance, (int, float)) or not math.isfinite(
                self.guidance):
            raise ValueError(f"edit.guidance: expected a finite number, got {self.guidance!r}")
        check_number("edit.temperature", self.temperature, low_open=True)


DATA_FEEDS = ("auto", "cache", "shards", "images")
# DataConfig fields that change how fast data arrive, never which: a run may resume with others.
DATA_RUNTIME_FIELDS = ("workers", "cache_max")


@dataclass(frozen=True)
class DataConfig:
    """Training data: ``shapes`` or an image-text dataset (webdataset, parquet, imagefolder,
    ``save_to_disk`` or a hub name; docs/real_data.md), and how the transformer stages are fed:
    ``"cache"`` (tokenised once, in memory, up to ``cache_max``), ``"shards"`` (pre-tokenised by
    ``muse-mini tokenize``), ``"images"`` (tokenised in the step); ``"auto"``: shards when ``tokens`` is set.
    """

    source: str = "shapes"
    num_examples: int = 20_000
    seed: int = 0
    image_column: str = "image"
    caption_column: str = "caption"
    paraphrase_prob: float = 0.0
    # Shapes scene kinds, in turn (example i has kind kinds[i % len(kinds)]):
    # repeating a kind gives it a larger share of the data. Other sources ignore it.
    kinds: tuple[str, ...] = ("single", "placed", "count", "relation")
    feed: str = "auto"
    tokens: str = ""  # a token-shard directory (muse-mini tokenize --out)
    cache_max: int = 200_000  # feed="cache" refuses larger datasets (they would be held in memory)
    text_cache_max: int = 20_000
    shuffle_shards: int = 8  # the shuffle buffer, in shards (muse_mini.data.stream)
    rows_per_shard: int = 1000  # shard size for sources without shards of their own (parquet, Shapes)
    workers: int = 0  # decode threads; 0: one per core
    on_error: str = "skip"  # a bad sample or missing shard: "skip" (warn) or "raise"

    def __post_init__(self):
        from muse_mini.data.captions import check_kinds

        if self.feed not in DATA_FEEDS:
            raise ValueError(f"data.feed: expected one of {DATA_FEEDS}, got {self.feed!r}")
        if self.on_error not in ("skip", "raise"):
            raise ValueError(f"data.on_error: expected 'skip' or 'raise', got {self.on_error!r}")
        for name in ("shuffle_shards", "rows_per_shard"):
            check_int(f"data.{name}", getattr(self, name))
        for name in ("cache_max", "text_cache_max", "workers"):
            check_int(f"data.{name}", getattr(self, name), minimum=0)
        check_int("data.num_examples", self.num_examples, minimum=0)
        check_seed("data.seed", self.seed)
        check_number("data.paraphrase_prob", self.paraphrase_prob, high=1.0)

        if self.feed == "shards" and not self.tokens:
            raise ValueError("data.tokens: data.feed=shards streams pre-tokenised shards; set data.tokens=DIR "
                             "(written by `muse-mini tokenize`)")
        try:
            check_kinds(self.kinds)
        except ValueError as e:
            raise ValueError(f"data.kinds: {e} (repeats set the mix)") from None

    @property
    def resolved_feed(self) -> str:
        """``feed`` with ``"auto"`` decided: ``"shards"`` when ``tokens`` is set, else ``"cache"``."""
        if self.feed != "auto":
            return self.feed
        return "shards" if self.tokens else "cache"


@dataclass(frozen=True)
class DecoderConfig:
    """The finetuned high-res decoder (Muse §2.5, §A.2: 4 residual blocks, 256 channels), trained on the
    frozen high-res encoder and codebook after the transformers; ``enabled=False`` keeps the tokenizer's."""

    enabled: bool = True
    channels: int = 256
    res_blocks: int = 4

    def __post_init__(self):
        check_int("decoder.channels", self.channels)
        check_int("decoder.res_blocks", self.res_blocks)


MESH_AXES = ("data", "fsdp", "tensor")


@dataclass(frozen=True)
class MeshConfig:
    """The device mesh (MaxText's axes): ``data`` splits the batch, ``fsdp`` the batch and the weights'
    ``embed`` axis, ``tensor`` heads and MLP widths; ``-1`` takes the remaining devices (:mod:`muse_mini.parallel`)."""

    data: int = 1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        for name in MESH_AXES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
                raise ValueError(f"mesh.{name}: expected a positive device count or -1 (the rest), got {value!r}")
        if sum(getattr(self, name) == -1 for name in MESH_AXES) > 1:
            raise ValueError(f"mesh: at most one axis may be -1 (the remaining devices), got {self.shape}")

    @property
    def shape(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in MESH_AXES}


TOKENIZER_STAGES = ("base", "highres", "decoder")


def tokenizer_stage_config(cfg: "MuseConfig", stage: str) -> VQGANConfig:
    """A tokenizer stage's model; ``decoder`` is the high-res tokenizer with ``cfg.decoder``'s decoder (§2.5)."""
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
    edit: EditConfig = field(default_factory=EditConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    decoder_train: TrainConfig = field(default_factory=_paper_vqgan_train)
    mesh: MeshConfig = field(default_factory=MeshConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """This config as indented JSON, as a run stores it in ``config.json``."""
        return json.dumps(self.to_dict(), indent=2)
