"""Named presets (model sizes) and recipes (a preset trained a given way, and where).

``toy`` (Shapes, CPU minutes), ``cc3m`` (Table 1) and ``paper-3b`` (Tables 4-6)
run one code path and differ only in numbers. Recipes: ``quick`` (``make demo``),
``full`` (the same models for longer), ``smoke`` (every stage for a few steps).
"""

from __future__ import annotations

import dataclasses
import typing

from muse_mini.config.overrides import apply_overrides
from muse_mini.config.schema import (
    DataConfig, DecoderConfig, EditConfig, MuseConfig, SamplerConfig, SuperResConfig, TextConfig, TrainConfig,
    TransformerConfig, VQGANConfig,
)

T5_XXL = TextConfig(encoder="google/t5-v1_1-xxl", width=4096, max_length=128)


def _toy_tokenizer() -> tuple[VQGANConfig, TrainConfig]:
    """The toy base tokenizer: 8-dim l2-normalised codes, frequent dead-code restarts, and no
    perceptual loss (no VGG weights offline), which reconstructs Shapes well enough for the evaluator."""
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
    return tok, tok_train


# long: one literal config, read top to bottom, with the reason for each choice beside it.
def _toy() -> MuseConfig:
    """Shapes on a laptop CPU: 32×32 → 8×8 base tokens, 64×64 → 16×16 high-res.

    Departures from the paper, all off in the paper presets: the high-res tokenizer's
    local encoder (every white cell one code), super-res's ``lowres_skip`` and
    ``lowres_input="pixels"``, and mask-free editing without guidance.
    """
    tok, tok_train = _toy_tokenizer()
    return MuseConfig(
        name="toy",
        # Every padding position costs cross-attention time (masked keys are
        # slow on CPU), so the text length is just above the longest caption.
        text=TextConfig(encoder="minilm", width=384, max_length=16),
        # A third each of count and relation scenes (a sixth each of single and
        # placed): with the uniform mix the 2-layer model never learned which
        # colour goes with which object in the quick recipe's steps; with this
        # one it does.
        data=DataConfig(source="shapes", num_examples=20_000,
                        kinds=("single", "placed", "count", "relation", "count", "relation")),
        # The base tokenizer keeps the paper's encoder: with the local one the base model's samples
        # collapse to blank images. The high-res one trains on 32×32 crops (it is convolutional, §2.2).
        tokenizer=tok,
        highres_tokenizer=dataclasses.replace(tok, image_size=64, train_crop=32, encoder="local"),
        # remat: faster on CPU, see TransformerConfig. Two layers: in the quick
        # recipe's few minutes more (cheaper) steps beat more depth; the full
        # recipe has the time for 4 layers. A 2x MLP (not 4x) learns as much
        # per step and steps faster; sincos-initialised positions lower the loss.
        base=TransformerConfig(depth=2, width=128, mlp_dim=256, num_heads=4, remat=True, pos_init="sincos"),
        superres=SuperResConfig(
            depth=2, width=128, mlp_dim=256, num_heads=4, lowres_depth=1, lowres_skip=True,
            lowres_input="pixels", remat=True,
        ),
        # The base tokenizer needs twice the high-res one's steps for the
        # evaluator to accept nearly all of its reconstructions.
        tokenizer_train=tok_train,
        highres_tokenizer_train=dataclasses.replace(tok_train, steps=1200),
        # 14400 steps: accuracy follows the examples seen. Over three training
        # seeds 7200 gave 41-52%, 10800 55-59% and 14400 57-63% (docs/results.md).
        base_train=TrainConfig(
            steps=14400, batch_size=32, optimizer="adamw", lr=2e-3, b2=0.99,
            weight_decay=0.045, warmup_steps=300, clip_norm=1.0,
            checkpoint_every=200, log_every=10,
        ),
        # With half these steps super-res lost much of the base model's
        # caption accuracy (shapes blur into circles); with these, little.
        superres_train=TrainConfig(
            steps=1000, batch_size=16, optimizer="adamw", lr=2e-3, b2=0.99,
            weight_decay=0.045, warmup_steps=50, clip_norm=1.0,
            checkpoint_every=200, log_every=10,
        ),
        # The paper's 24 steps (§2.8); choice temperature 2 and guidance 1.5 beat 1 and 2 on
        # the quick recipe's models (docs/results.md).
        sampler=SamplerConfig(
            steps=24, temperature=0.2, choice_temperature=2.0, guidance=1.5,
        ),
        superres_sampler=SamplerConfig(
            steps=8, temperature=0.2, choice_temperature=1.0, guidance=0.0,
        ),
        # §A.2's ratio: twice the tokenizer decoder's channels and blocks. It
        # trains from scratch and needs more steps to beat the tokenizer's own
        # decoder than the quick recipe has left, so only the full recipe
        # enables it.
        decoder=DecoderConfig(enabled=False, channels=16, res_blocks=2),
        decoder_train=dataclasses.replace(tok_train, steps=2400),
        # Constant guidance 4 makes the walk redraw the scene (the object moves); without
        # guidance it recolours the object in place (docs/editing.md).
        edit=EditConfig(guidance=0.0),
    )


def _cc3m() -> MuseConfig:
    """Muse Table 1's CC3M model, 632M base + 268M super-res (the paper gives only the totals).

    Table 4's 4× MLP ratio, 64-dim heads and T5-XXL; base 1280 wide × 23 deep,
    super-res 1024 wide with 5 low-res + 10 high-res layers (Table 6's 1:2).
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
# Recipes


class Recipe(typing.NamedTuple):
    """A preset trained a given way: ``get_preset(preset, overrides)``, run under ``out``."""

    preset: str
    out: str
    overrides: tuple[str, ...]


# Tiny versions of every stage (the full recipe's too): enough to exercise the
# code, not to learn much. Applied on top of the quick recipe.
SMOKE_OVERRIDES = (
    "data.num_examples=256",
    "tokenizer_train.steps=20", "tokenizer_train.warmup_steps=5", "tokenizer_train.checkpoint_every=10",
    "highres_tokenizer_train.steps=20", "highres_tokenizer_train.warmup_steps=5",
    "highres_tokenizer_train.checkpoint_every=10", "highres_tokenizer_train.batch_size=4",
    "base_train.steps=20", "base_train.warmup_steps=5", "base_train.checkpoint_every=10",
    "superres_train.steps=10", "superres_train.warmup_steps=2", "superres_train.checkpoint_every=10",
    "decoder.enabled=true", "decoder_train.steps=10", "decoder_train.warmup_steps=2",
    "decoder_train.checkpoint_every=10", "decoder_train.batch_size=4", "superres.lowres_margin=2",
    "tokenizer_train.batch_size=4",
    "base_train.batch_size=16", "superres_train.batch_size=8",
    "base.depth=1", "base.width=64", "base.mlp_dim=128", "base.num_heads=2",
    "superres.depth=1", "superres.lowres_depth=1", "superres.width=64", "superres.mlp_dim=128",
    "superres.num_heads=2", "sampler.steps=6", "superres_sampler.steps=4",
)

RECIPES = {
    # The quick recipe is the toy preset as it stands (make demo).
    "quick": Recipe("toy", "runs/demo", ()),
    # The full recipe trains the same models for longer, the base model with
    # 4 layers (in the quick recipe's few minutes 2 layers do better; with
    # more steps 4 learn more per step): accuracy follows the base step
    # count, so base gets most of the time. Super-res patches see 2 pixels of
    # their neighbours (better after many steps, worse after few), and the
    # finetuned decoder (§2.5) runs last. Step counts are sized from measured
    # per-step times on a small CPU.
    "full": Recipe("toy", "runs/full", (
        "data.num_examples=50000", "data.kinds=single,placed,count,relation",
        "highres_tokenizer_train.steps=2400",  # the base tokenizer's 2400 is the preset's
        "base.depth=4", "base.mlp_dim=512", "base.pos_init=normal",  # the measured full model
        "base_train.steps=16000", "base_train.warmup_steps=500",
        "superres.mlp_dim=512", "superres.lowres_margin=2", "superres_train.steps=3500", "decoder.enabled=true",
        # the sampler its figures were measured with
        "sampler.steps=12", "sampler.choice_temperature=1.0", "sampler.guidance=2.0",
    )),
    "smoke": Recipe("toy", "runs/smoke", SMOKE_OVERRIDES),
}


# Every stage's TrainConfig: a training seed sets them all (init, masking, batch order).
TRAIN_SECTIONS = ("tokenizer_train", "highres_tokenizer_train", "base_train", "superres_train", "decoder_train")


def seed_overrides(seed: int) -> tuple[str, ...]:
    """Overrides that train every stage with ``seed``; the Shapes data (``data.seed``) stay the same."""
    return tuple(f"{section}.seed={seed}" for section in TRAIN_SECTIONS)


def get_recipe(name: str, overrides: typing.Sequence[str] = ()) -> MuseConfig:
    """The named recipe's config, with further ``overrides`` applied after the recipe's own."""
    if name not in RECIPES:
        raise ValueError(f"recipe: expected one of {sorted(RECIPES)}, got {name!r}")
    recipe = RECIPES[name]
    return get_preset(recipe.preset, [*recipe.overrides, *overrides])
