"""Stage 1: training the VQGAN tokenizers (Muse §2.2, §2.5, §A.2, Table 5).

Glue only: the model is :mod:`muse_mini.vqgan`, the codebook
:mod:`muse_mini.quantizer`, the perceptual term :mod:`muse_mini.perceptual`,
and the loop is the shared trainer (:func:`muse_mini.training.train`), so runs
resume bit-exactly. Two tokenizers are trained on the same images: stage
``"base"`` on the low-res images (``cfg.tokenizer``, 32×32 → 8×8 tokens in the
toy preset) and stage ``"highres"`` on the high-res ones
(``cfg.highres_tokenizer``, 64×64 → 16×16).

The generator loss is ``‖x − x̂‖² + codebook + β·commitment
+ perceptual_weight · LPIPS + adversarial_weight · hinge_G`` (Table 5: 0.05 and
0.1). The adversarial term and the discriminator's updates start at
``adversarial_start``. The ``toy`` preset sets ``perceptual="none"`` and
``adversarial_weight=0``: no pretrained VGG16 weights can be downloaded
offline, so the toy tokenizer trains with reconstruction and codebook losses
only, and its ``perceptual`` metric is 0 because the term is off, not because
it was computed. Dead codes are restarted every ``restart_every`` steps.

§2.5 decoder finetuning: ``train_tokenizer(..., finetune_from=RUN)`` loads a
finished tokenizer, replaces its decoder by a fresh one sized by
``decoder_channels``/``decoder_res_blocks`` and trains only that decoder
(encoder and codebook frozen, so the token ids do not change). Stage
``"decoder"`` is the pipeline's instance of it: the high-res tokenizer with
the larger decoder of ``cfg.decoder``, trained on ``cfg.decoder_train``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from muse_mini.config import DataConfig, MuseConfig, TrainConfig, VQGANConfig, from_dict
from muse_mini.quantizer import code_counts, perplexity, restart_dead_codes, restart_due, usage_fraction
from muse_mini.training import (
    epoch_batch_indices, init_key, load_final, make_optimizer, relative_run_path, stage_complete, train,
)
from muse_mini.vqgan import (
    VQGAN, PatchDiscriminator, all_filter, check_images, decoder_filter, fast_init, grow_decoder,
    hinge_d_loss, hinge_g_loss, to_float,
)

STAGES = ("base", "highres", "decoder")


class TrainState(eqx.Module):
    """What a tokenizer run checkpoints.

    ``counts_K`` accumulates code usage since the last dead-code restart;
    ``step`` counts updates (the trainer passes only a key, and the adversarial
    switch and restarts need the step). ``disc``/``opt_d`` are None when the
    adversarial weight is 0.
    """

    vqgan: VQGAN
    opt_g: Any
    disc: PatchDiscriminator | None
    opt_d: Any
    counts_K: jax.Array
    step: jax.Array


def stage_config(cfg: MuseConfig, stage: str) -> tuple[VQGANConfig, TrainConfig]:
    """A stage's model and training configs: ``base`` → ``cfg.tokenizer`` and
    ``cfg.tokenizer_train``; ``highres`` → ``cfg.highres_tokenizer`` and
    ``cfg.highres_tokenizer_train``; ``decoder`` → the high-res tokenizer with
    ``cfg.decoder``'s larger decoder, and ``cfg.decoder_train`` (§2.5)."""
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")
    if stage == "base":
        return cfg.tokenizer, cfg.tokenizer_train
    if stage == "decoder":
        grown = dataclasses.replace(cfg.highres_tokenizer, decoder_channels=cfg.decoder.channels,
                                    decoder_res_blocks=cfg.decoder.res_blocks)
        return grown, cfg.decoder_train
    return cfg.highres_tokenizer, cfg.highres_tokenizer_train


def build_perceptual(vcfg: VQGANConfig):
    """The frozen LPIPS network, or None for ``perceptual="none"`` (the offline toy preset)."""
    if vcfg.perceptual == "none":
        return None
    if vcfg.perceptual != "vgg16":
        raise ValueError(f"perceptual: expected 'vgg16' or 'none', got {vcfg.perceptual!r}")
    from muse_mini.perceptual import load_lpips

    return load_lpips(vcfg.perceptual_weights)


def _uses_disc(vcfg: VQGANConfig) -> bool:
    return vcfg.adversarial_weight > 0


def init_state(vcfg: VQGANConfig, tcfg: TrainConfig, key, *, vqgan: VQGAN | None = None,
               finetune: bool = False) -> TrainState:
    """A fresh state; ``vqgan`` overrides the freshly built model (decoder finetuning)."""
    k_model, k_disc = jax.random.split(key)
    vqgan = VQGAN(vcfg, key=k_model) if vqgan is None else vqgan
    spec = decoder_filter(vqgan) if finetune else all_filter(vqgan)
    opt = make_optimizer(tcfg)
    disc = opt_d = None
    if _uses_disc(vcfg):
        disc = fast_init(PatchDiscriminator, vcfg.disc_channels, vcfg.disc_layers, key=k_disc)
        opt_d = opt.init(eqx.filter(disc, eqx.is_inexact_array))
    return TrainState(
        vqgan, opt.init(eqx.filter(vqgan, spec)), disc, opt_d,
        jnp.zeros(vcfg.codebook_size, jnp.int32), jnp.zeros((), jnp.int32),
    )


def make_train_step(vcfg: VQGANConfig, tcfg: TrainConfig, *, finetune: bool = False, lpips=None):
    """``step_fn(state, batch_uint8, key) -> (state, metrics)`` for the shared trainer.

    With ``finetune`` only the decoder is updated (§2.5) and codes are never
    restarted, so the token "language" stays fixed.
    """
    opt = make_optimizer(tcfg)
    use_disc = _uses_disc(vcfg)
    restart = vcfg.restart_every > 0 and not finetune

    def generator_loss(diff, static, disc, x_BxHxWx3, adv_on):
        vqgan = eqx.combine(diff, static)
        z_Bxhxwxd = jax.vmap(vqgan.latents)(x_BxHxWx3)
        zq_Bxhxwxd, aux = jax.vmap(vqgan.quantizer)(z_Bxhxwxd)
        recon_BxHxWx3 = jax.vmap(vqgan.decode_latents)(zq_Bxhxwxd)
        recon = jnp.mean((recon_BxHxWx3 - x_BxHxWx3) ** 2)
        l1 = jnp.mean(jnp.abs(recon_BxHxWx3 - x_BxHxWx3))
        codebook, commit = jnp.mean(aux.codebook_loss), jnp.mean(aux.commitment_loss)
        loss = recon + vcfg.l1_weight * l1 + codebook + vcfg.commitment_weight * commit
        perceptual = adversarial = jnp.zeros(())
        if lpips is not None:
            perceptual = jnp.mean(jax.vmap(lpips)(recon_BxHxWx3, x_BxHxWx3))
            loss = loss + vcfg.perceptual_weight * perceptual
        if use_disc:
            adversarial = hinge_g_loss(jax.vmap(disc)(recon_BxHxWx3))
            loss = loss + adv_on * vcfg.adversarial_weight * adversarial
        metrics = dict(recon=recon, l1=l1, codebook=codebook, commit=commit, perceptual=perceptual,
                       adversarial=adversarial, psnr=10 * jnp.log10(4.0 / recon))
        keep = jax.lax.stop_gradient((z_Bxhxwxd, aux.ids, recon_BxHxWx3))
        return loss, (metrics, keep)

    def disc_update(disc, opt_d, x_BxHxWx3, recon_BxHxWx3):
        def loss_fn(d):
            return hinge_d_loss(jax.vmap(d)(x_BxHxWx3), jax.vmap(d)(recon_BxHxWx3))

        d_loss, grads = eqx.filter_value_and_grad(loss_fn)(disc)
        updates, opt_d = opt.update(grads, opt_d, eqx.filter(disc, eqx.is_inexact_array))
        return eqx.apply_updates(disc, updates), opt_d, d_loss

    def step_fn(state: TrainState, batch, key):
        x_BxHxWx3 = to_float(batch)
        adv_on = state.step >= vcfg.adversarial_start
        spec = decoder_filter(state.vqgan) if finetune else all_filter(state.vqgan)
        diff, static = eqx.partition(state.vqgan, spec)
        (loss, (metrics, (z, ids, recon_BxHxWx3))), grads = eqx.filter_value_and_grad(
            generator_loss, has_aux=True
        )(diff, static, state.disc, x_BxHxWx3, adv_on)
        updates, opt_g = opt.update(grads, state.opt_g, diff)
        vqgan = eqx.combine(eqx.apply_updates(diff, updates), static)

        disc, opt_d, d_loss = state.disc, state.opt_d, jnp.zeros(())
        if use_disc:
            # Before adversarial_start the discriminator is not touched at all
            # (not even by weight decay), so resuming across the switch is exact.
            d_arrays, d_static = eqx.partition((disc, opt_d), eqx.is_array)

            def update(d_arrays):
                d, o = eqx.combine(d_arrays, d_static)
                d, o, dl = disc_update(d, o, x_BxHxWx3, recon_BxHxWx3)
                return eqx.filter((d, o), eqx.is_array), dl

            d_arrays, d_loss = jax.lax.cond(adv_on, update, lambda a: (a, jnp.zeros(())), d_arrays)
            disc, opt_d = eqx.combine(d_arrays, d_static)

        batch_counts = code_counts(ids, vcfg.codebook_size)
        counts = state.counts_K + batch_counts
        restarted = jnp.zeros((), jnp.int32)
        if restart:
            due = restart_due(state.step, vcfg.restart_every)
            fresh, n_dead = restart_dead_codes(vqgan.quantizer, z, counts, key=key)
            codebook = jnp.where(due, fresh.codebook_KxD, vqgan.quantizer.codebook_KxD)
            vqgan = eqx.tree_at(lambda m: m.quantizer.codebook_KxD, vqgan, codebook)
            restarted = jnp.where(due, n_dead, 0)
            counts = jnp.where(due, 0, counts)

        metrics = dict(
            metrics, loss=loss, disc=d_loss, usage=usage_fraction(batch_counts),
            perplexity=perplexity(batch_counts), restarted=restarted, grad_norm=optax.tree.norm(grads),
        )
        return TrainState(vqgan, opt_g, disc, opt_d, counts, state.step + 1), metrics

    return step_fn


# --------------------------------------------------------------------------
# Data


def stage_images(cfg: MuseConfig, stage: str) -> np.ndarray:
    """The stage's training images, uint8 ``(N, S, S, 3)``, generated once.

    Shapes' train split at 64×64 for ``highres`` and ``decoder``, and its 2×2
    box-downsampled 32×32 version for ``base`` (the same rule the transformer
    stages use).
    """
    from muse_mini.token_data import lowres_images, training_images

    images_hr, _ = training_images(cfg)
    return lowres_images(cfg, images_hr) if stage == "base" else images_hr


def random_crops(images_NxSxSx3: np.ndarray, crop: int, multiple: int, *, seed: int, step: int) -> np.ndarray:
    """One random ``crop × crop`` window per image, at offsets that are multiples of ``multiple``.

    A pure function of ``(seed, step)``, as the trainer's batches must be.
    Offsets on the token grid make a crop's tokens those of the full image
    (up to border effects), so training on crops teaches the same tokenizer.
    """
    n, size = images_NxSxSx3.shape[0], images_NxSxSx3.shape[1]
    if crop <= 0 or crop == size:
        return images_NxSxSx3
    if crop > size or crop % multiple:
        raise ValueError(f"train_crop: expected a multiple of f={multiple} up to {size}, got {crop}")
    rng = np.random.default_rng([seed, step, 0xC0])
    top, left = rng.integers(0, (size - crop) // multiple + 1, size=(2, n)) * multiple
    rows = top[:, None] + np.arange(crop)  # N×crop
    cols = left[:, None] + np.arange(crop)
    return images_NxSxSx3[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


# --------------------------------------------------------------------------
# Train and load


def _metadata(run_dir: Path, cfg: MuseConfig, stage: str, finetune_from) -> dict:
    # Only what shapes this tokenizer: changing e.g. base.depth must not make a
    # finished tokenizer run refuse to load or resume.
    meta = {"stage": stage, "tokenizer": dataclasses.asdict(stage_config(cfg, stage)[0]),
            "data": dataclasses.asdict(cfg.data), "finetune_from": None}
    if finetune_from is not None:
        meta["finetune_from"] = relative_run_path(finetune_from, run_dir)
    return meta


def _encoder_fields(vcfg: VQGANConfig) -> dict:
    d = dataclasses.asdict(vcfg)
    return {k: d[k] for k in ("base_channels", "channel_mult", "num_res_blocks", "codebook_size",
                              "code_dim", "code_normalize", "encoder")}


def train_tokenizer(cfg: MuseConfig, stage: str, run_dir, *, progress: bool = True,
                    finetune_from=None) -> VQGAN:
    """Train (or resume, or just load) the ``stage`` tokenizer in ``run_dir``; returns the VQGAN.

    ``finetune_from`` names a finished tokenizer run whose encoder and codebook
    are kept frozen while a new decoder (``decoder_channels``,
    ``decoder_res_blocks``) is trained (§2.5).
    """
    run_dir = Path(run_dir)
    vcfg, tcfg = stage_config(cfg, stage)
    finetune = finetune_from is not None
    if stage == "decoder" and not finetune:
        raise ValueError("finetune_from: stage 'decoder' finetunes a finished high-res tokenizer run; "
                         "name it (e.g. runs/demo/tokenizer-highres)")
    vqgan = None
    if finetune:
        old, old_cfg = load_tokenizer(finetune_from, with_config=True)
        if _encoder_fields(old_cfg) != _encoder_fields(vcfg):
            raise ValueError(
                f"finetune_from: {finetune_from} has encoder/codebook {_encoder_fields(old_cfg)}, "
                f"but the config asks for {_encoder_fields(vcfg)}; only decoder_* may differ"
            )
        vqgan = grow_decoder(old, vcfg, key=jax.random.fold_in(init_key(tcfg.seed), 1))
    state = init_state(vcfg, tcfg, init_key(tcfg.seed), vqgan=vqgan, finetune=finetune)
    if stage_complete(run_dir):  # train() just loads the final state
        batch_fn = lpips = None
    else:
        lpips = build_perceptual(vcfg)
        images = stage_images(cfg, stage)
        check_images(images, size=vcfg.image_size, name=f"{stage} training images")

        def batch_fn(step):
            batch = images[epoch_batch_indices(len(images), tcfg.batch_size, tcfg.seed, step)]
            return random_crops(batch, vcfg.train_crop, vcfg.downsample, seed=tcfg.seed, step=step)

    step_fn = make_train_step(vcfg, tcfg, finetune=finetune, lpips=lpips)
    state = train(
        run_dir, state=state, step_fn=step_fn, batch_fn=batch_fn, cfg=tcfg,
        metadata=_metadata(run_dir, cfg, stage, finetune_from), progress=progress,
        config_defaults={"tokenizer": dataclasses.asdict(VQGANConfig()), "data": dataclasses.asdict(DataConfig())},
    )
    return state.vqgan


def read_tokenizer_config(run_dir) -> tuple[VQGANConfig, TrainConfig, dict]:
    """``(VQGANConfig, TrainConfig, metadata)`` from a tokenizer run's ``config.json``."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"run: {run_dir} has no config.json; is it a tokenizer run directory?")
    stored = json.loads(path.read_text())
    meta = stored["metadata"]
    if "tokenizer" not in meta:
        raise ValueError(f"run: {run_dir} is a {meta.get('stage', 'unknown')!r} run, not a tokenizer run")
    return from_dict(VQGANConfig, meta["tokenizer"]), from_dict(TrainConfig, stored["train_config"]), meta


def load_tokenizer(run_dir, *, with_config: bool = False):
    """The final VQGAN of a finished tokenizer run (skeleton built with ``eqx.filter_eval_shape``).

    With ``with_config=True`` returns ``(vqgan, VQGANConfig)``.
    """
    vcfg, tcfg, meta = read_tokenizer_config(run_dir)
    finetune = meta.get("finetune_from") is not None
    like = eqx.filter_eval_shape(
        lambda k: init_state(vcfg, tcfg, k, vqgan=VQGAN(vcfg, key=k), finetune=finetune), init_key(0)
    )
    vqgan = load_final(run_dir, like).vqgan
    return (vqgan, vcfg) if with_config else vqgan


def check_finetuned_from(run_dir, tokenizer_run) -> None:
    """Raise unless ``run_dir`` is a decoder finetuned from ``tokenizer_run`` (§2.5).

    A finetuned decoder only understands the codebook it was trained on, so a
    pipeline must not pair it with another tokenizer's tokens.
    """
    _, _, meta = read_tokenizer_config(run_dir)
    source = meta.get("finetune_from")
    expected = relative_run_path(tokenizer_run, run_dir)
    if source is None or os.path.normpath(source) != os.path.normpath(expected):
        raise ValueError(
            f"{Path(run_dir) / 'config.json'}: expected a decoder finetuned from {tokenizer_run}, "
            f"but it records finetune_from={source!r}"
        )


# --------------------------------------------------------------------------
# Using a tokenizer on uint8 images


@eqx.filter_jit
def _encode(vqgan: VQGAN, images_BxHxWx3):
    return jax.vmap(vqgan.encode)(to_float(images_BxHxWx3))


@eqx.filter_jit
def _decode(vqgan: VQGAN, ids_Bxhxw):
    return decode_ids_uint8(vqgan, ids_Bxhxw)


def decode_ids_uint8(vqgan: VQGAN, ids_Bxhxw):
    """Jittable: token maps → uint8 images."""
    img = jax.vmap(vqgan.decode_ids)(ids_Bxhxw)
    return jnp.clip(jnp.round((img + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def decode_token_batch(vqgan: VQGAN, tokens_BxN):
    """Jittable: flat square token maps ``(B, h·w)`` → uint8 images (the samplers' output)."""
    side = math.isqrt(tokens_BxN.shape[-1])
    if side * side != tokens_BxN.shape[-1]:
        raise ValueError(f"tokens: expected (B, side²) square token maps, got {tokens_BxN.shape}")
    return decode_ids_uint8(vqgan, tokens_BxN.reshape(-1, side, side))


def _batched(fn, items, batch_size: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    out = [np.asarray(fn(items[i : i + batch_size]))
           for i in tqdm(range(0, len(items), batch_size), disable=not progress, desc=desc)]
    return np.concatenate(out) if out else np.zeros((0,), np.uint8)


def encode_images(vqgan: VQGAN, images, *, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """uint8 (or [-1, 1] float) images ``(N, S, S, 3)`` → token ids ``(N, S/f, S/f)`` int32."""
    images = check_images(images, size=vqgan.image_size)
    return _batched(lambda x: _encode(vqgan, x), images, batch_size, progress, "encode").astype(np.int32)


def decode_tokens(vqgan: VQGAN, ids, *, batch_size: int = 256) -> np.ndarray:
    """Token ids ``(N, h, w)`` or flat ``(N, h·w)`` → uint8 images ``(N, h·f, w·f, 3)``."""
    ids = np.asarray(ids)
    if ids.ndim == 2:
        side = math.isqrt(ids.shape[1])
        if side * side != ids.shape[1]:
            raise ValueError(f"ids: expected (N, h, w) or (N, side²), got {ids.shape}")
        ids = ids.reshape(len(ids), side, side)
    if ids.ndim != 3 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids: expected integer (N, h, w), got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= vqgan.quantizer.codebook_size):
        raise ValueError(f"ids: values must be in [0, {vqgan.quantizer.codebook_size}), "
                         f"got [{ids.min()}, {ids.max()}]")
    return _batched(lambda t: _decode(vqgan, t), ids, batch_size, False, "decode")


def reconstruct(vqgan: VQGAN, images, *, batch_size: int = 256) -> np.ndarray:
    """Encode then decode: uint8 ``(N, S, S, 3)`` → uint8 reconstructions."""
    return decode_tokens(vqgan, encode_images(vqgan, images, batch_size=batch_size), batch_size=batch_size)


def evaluate_tokenizer(vqgan: VQGAN, images, captions, *, batch_size: int = 256) -> dict:
    """Reconstruction quality on captioned images: PSNR, codebook use, caption accuracy.

    ``accuracy`` is the fraction of reconstructions whose caption the Shapes
    evaluator still accepts (the toy tokenizer's "done when": ≥ 98%).
    """
    from muse_mini.evaluator import caption_accuracy
    from muse_mini.vqgan import psnr

    ids = encode_images(vqgan, images, batch_size=batch_size)
    recon = decode_tokens(vqgan, ids, batch_size=batch_size)
    counts = np.bincount(ids.ravel(), minlength=vqgan.quantizer.codebook_size)
    return {
        "n_images": len(images), "psnr": psnr(images, recon),
        "usage": float(np.mean(counts > 0)), "perplexity": float(perplexity(jnp.asarray(counts))),
        "accuracy": caption_accuracy(recon, captions)["accuracy"],
    }


# --------------------------------------------------------------------------
# CLI


def add_parsers(sub) -> None:
    from muse_mini.cli import add_overrides_argument
    from muse_mini.config import PRESETS

    p = sub.add_parser("train-tokenizer", help="train a VQGAN tokenizer (resumable; §2.2)")
    p.add_argument("--preset", default="toy", choices=sorted(PRESETS))
    p.add_argument("--stage", required=True, choices=STAGES,
                   help="base: cfg.tokenizer on low-res images; highres: cfg.highres_tokenizer; "
                        "decoder: cfg.decoder's larger high-res decoder (§2.5; needs --finetune-decoder-from)")
    p.add_argument("--run", required=True, help="run directory, e.g. runs/demo/tokenizer-base")
    p.add_argument("--finetune-decoder-from", default=None, metavar="RUN",
                   help="finished tokenizer run: keep its encoder and codebook frozen and train a "
                        "new decoder sized by decoder_channels/decoder_res_blocks (§2.5)")
    p.add_argument("--no-progress", action="store_true")
    add_overrides_argument(p)
    p.set_defaults(func=_cli_train)

    p = sub.add_parser("reconstruct", help="encode and decode PNG images with a trained tokenizer")
    p.add_argument("--run", required=True, help="finished tokenizer run directory")
    p.add_argument("--images", required=True, help="folder of *.png images of the tokenizer's size")
    p.add_argument("--out", required=True, help="output folder (same file names)")
    p.set_defaults(func=_cli_reconstruct)


def _cli_train(args) -> None:
    from muse_mini.config import get_preset

    cfg = get_preset(args.preset, args.overrides)
    if args.stage == "decoder" and not args.finetune_decoder_from:
        raise ValueError("--finetune-decoder-from: --stage decoder needs the finished high-res tokenizer run "
                         "whose decoder it replaces, e.g. runs/demo/tokenizer-highres")
    if args.finetune_decoder_from and not stage_complete(args.finetune_decoder_from):
        raise FileNotFoundError(f"--finetune-decoder-from: {args.finetune_decoder_from} holds no finished run")
    train_tokenizer(cfg, args.stage, args.run, progress=not args.no_progress,
                    finetune_from=args.finetune_decoder_from)
    print(f"{args.stage} tokenizer trained in {args.run}")


def _cli_reconstruct(args) -> None:
    from PIL import Image

    src, out = Path(args.images), Path(args.out)
    paths = sorted(src.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"--images: no *.png files in {src}")
    if not stage_complete(args.run):
        raise FileNotFoundError(f"--run: {args.run} holds no finished tokenizer run")
    vqgan = load_tokenizer(args.run)
    images = []
    for path in paths:
        img = np.asarray(Image.open(path).convert("RGB"))
        if img.shape[:2] != (vqgan.image_size, vqgan.image_size):
            raise ValueError(f"--images: {path.name} is {img.shape[1]}×{img.shape[0]}, but the tokenizer "
                             f"in {args.run} expects {vqgan.image_size}×{vqgan.image_size}")
        images.append(img)
    recon = reconstruct(vqgan, np.stack(images))
    out.mkdir(parents=True, exist_ok=True)
    for path, img in zip(paths, recon):
        Image.fromarray(img).save(out / path.name)
    print(f"wrote {len(paths)} reconstructions to {out}")
