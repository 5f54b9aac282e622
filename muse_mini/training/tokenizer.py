"""§2.2: training the VQGAN tokenizers (and §2.5's finetuned decoder; §A.2, Table 5).

Stage ``"base"`` trains ``cfg.tokenizer`` on the low-res images, ``"highres"``
``cfg.highres_tokenizer`` on the high-res ones, through the shared trainer
(:func:`muse_mini.training.loop.train`). The generator loss is ``‖x − x̂‖² +
codebook + β·commitment + perceptual_weight·LPIPS + adversarial_weight·hinge_G``;
the adversarial term starts at ``adversarial_start``, and dead codes restart every
``restart_every`` steps. The toy preset has no perceptual or adversarial term: no
VGG16 weights can be downloaded offline, so its ``perceptual`` metric is 0 because
the term is off. Stage ``"decoder"`` (§2.5) keeps a finished high-res tokenizer's
encoder and codebook frozen and trains a larger decoder (``finetune_from``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from muse_mini.data.evaluator import caption_accuracy
from muse_mini.config import (
    DATA_RUNTIME_FIELDS, TOKENIZER_STAGES, DataConfig, MuseConfig, TrainConfig, VQGANConfig, tokenizer_stage_config,
)
from muse_mini.models.codec import decode_tokens, encode_images
from muse_mini.models.perceptual import load_lpips
from muse_mini.models.quantizer import code_counts, perplexity, restart_dead_codes, restart_due, usage_fraction
from muse_mini.parallel.mesh import make_mesh
from muse_mini.data.image_shards import open_image_reader
from muse_mini.data.shapes import downsample
from muse_mini.data.stream import Prefetch
from muse_mini.parallel.hosts import local_rows
from muse_mini.parallel.rules import batch_sharding, check_batch_size
from muse_mini.runs.layout import relative_run_path
from muse_mini.runs.load import load_tokenizer
from muse_mini.training.feeds import base_images, training_images
from muse_mini.training.keys import epoch_batch_indices, init_key
from muse_mini.training.loop import train
from muse_mini.training.optim import make_optimizer
from muse_mini.training.rundir import RunSpec
from muse_mini.models.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from muse_mini.models.images import check_images, psnr, to_float
from muse_mini.models.vqgan import VQGAN, all_filter, decoder_filter, fast_init, grow_decoder

STAGES = TOKENIZER_STAGES


class TokenizerState(eqx.Module):
    """What a tokenizer run checkpoints: ``counts_K`` is code usage since the last restart, ``step``
    the update count (the adversarial switch needs it); ``disc``/``opt_d`` None without a GAN term."""

    vqgan: VQGAN
    opt_g: Any
    disc: PatchDiscriminator | None
    opt_d: Any
    counts_K: jax.Array
    step: jax.Array


TRAIN_SECTIONS = {"base": "tokenizer_train", "highres": "highres_tokenizer_train", "decoder": "decoder_train"}


def stage_config(cfg: MuseConfig, stage: str) -> tuple[VQGANConfig, TrainConfig]:
    """A stage's ``(VQGANConfig, TrainConfig)``."""
    vcfg = tokenizer_stage_config(cfg, stage)
    return vcfg, getattr(cfg, TRAIN_SECTIONS[stage])


def build_perceptual(vcfg: VQGANConfig):
    """The frozen LPIPS network, or None for ``perceptual="none"`` (the offline toy preset)."""
    if vcfg.perceptual == "none":
        return None
    if vcfg.perceptual != "vgg16":
        raise ValueError(f"perceptual: expected 'vgg16' or 'none', got {vcfg.perceptual!r}")
    return load_lpips(vcfg.perceptual_weights)


def _uses_disc(vcfg: VQGANConfig) -> bool:
    return vcfg.adversarial_weight > 0


def init_tokenizer_state(vcfg: VQGANConfig, tcfg: TrainConfig, key, *, vqgan: VQGAN | None = None,
               finetune: bool = False) -> TokenizerState:
    """A fresh state; ``vqgan`` overrides the freshly built model (decoder finetuning)."""
    k_model, k_disc = jax.random.split(key)
    vqgan = VQGAN(vcfg, key=k_model) if vqgan is None else vqgan
    spec = decoder_filter(vqgan) if finetune else all_filter(vqgan)
    opt = make_optimizer(tcfg)
    disc = opt_d = None
    if _uses_disc(vcfg):
        disc = fast_init(PatchDiscriminator, vcfg.disc_channels, vcfg.disc_layers, key=k_disc)
        opt_d = opt.init(eqx.filter(disc, eqx.is_inexact_array))
    return TokenizerState(
        vqgan, opt.init(eqx.filter(vqgan, spec)), disc, opt_d,
        jnp.zeros(vcfg.codebook_size, jnp.int32), jnp.zeros((), jnp.int32),
    )


def _generator_loss(vcfg: VQGANConfig, lpips, use_disc: bool):
    """``loss(diff, static, disc, x, adv_on) -> (loss, (metrics, (z, ids, recon)))`` (Table 5)."""

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

    return generator_loss


def _disc_step(opt, disc, opt_d, x_BxHxWx3, recon_BxHxWx3, adv_on):
    """The discriminator's hinge update once ``adv_on``; untouched before (not even decayed), so
    resuming across the switch is exact."""
    d_arrays, d_static = eqx.partition((disc, opt_d), eqx.is_array)

    def update(d_arrays):
        d, o = eqx.combine(d_arrays, d_static)
        d_loss, grads = eqx.filter_value_and_grad(
            lambda d: hinge_d_loss(jax.vmap(d)(x_BxHxWx3), jax.vmap(d)(recon_BxHxWx3))
        )(d)
        updates, o = opt.update(grads, o, eqx.filter(d, eqx.is_inexact_array))
        return eqx.filter((eqx.apply_updates(d, updates), o), eqx.is_array), d_loss

    d_arrays, d_loss = jax.lax.cond(adv_on, update, lambda a: (a, jnp.zeros(())), d_arrays)
    disc, opt_d = eqx.combine(d_arrays, d_static)
    return disc, opt_d, d_loss


def _maybe_restart(vqgan: VQGAN, step, z, counts_K, restart_every: int, key):
    """Restart dead codes every ``restart_every`` updates; ``(vqgan, counts, n_restarted)``."""
    due = restart_due(step, restart_every)
    fresh, n_dead = restart_dead_codes(vqgan.quantizer, z, counts_K, key=key)
    codebook = jnp.where(due, fresh.codebook_KxD, vqgan.quantizer.codebook_KxD)
    vqgan = eqx.tree_at(lambda m: m.quantizer.codebook_KxD, vqgan, codebook)
    return vqgan, jnp.where(due, 0, counts_K), jnp.where(due, n_dead, 0)


def make_tokenizer_step(vcfg: VQGANConfig, tcfg: TrainConfig, *, finetune: bool = False, lpips=None):
    """``step_fn(state, batch_uint8, key) -> (state, metrics)``; with ``finetune`` only the decoder
    learns and codes never restart, so the token "language" stays fixed (§2.5)."""
    opt = make_optimizer(tcfg)
    use_disc = _uses_disc(vcfg)
    restart = vcfg.restart_every > 0 and not finetune
    generator_loss = _generator_loss(vcfg, lpips, use_disc)

    def step_fn(state: TokenizerState, batch, key):
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
            disc, opt_d, d_loss = _disc_step(opt, disc, opt_d, x_BxHxWx3, recon_BxHxWx3, adv_on)

        batch_counts = code_counts(ids, vcfg.codebook_size)
        counts = state.counts_K + batch_counts
        restarted = jnp.zeros((), jnp.int32)
        if restart:
            vqgan, counts, restarted = _maybe_restart(vqgan, state.step, z, counts, vcfg.restart_every, key)

        metrics = dict(
            metrics, loss=loss, disc=d_loss, usage=usage_fraction(batch_counts),
            perplexity=perplexity(batch_counts), restarted=restarted, grad_norm=optax.tree.norm(grads),
        )
        return TokenizerState(vqgan, opt_g, disc, opt_d, counts, state.step + 1), metrics

    return step_fn


# --------------------------------------------------------------------------
# Data


def stage_images(cfg: MuseConfig, stage: str) -> np.ndarray:
    """The stage's Shapes images, uint8: the high-res ones, or for ``base`` 2×2 box-downsampled."""
    images_hr, _ = training_images(cfg)
    return base_images(cfg, images_hr) if stage == "base" else images_hr


def stage_batches(cfg: MuseConfig, stage: str, mesh):
    """``step -> uint8 batch``, pure in the step: Shapes held in memory, any other source streamed,
    each process reading its own shards and rows."""
    vcfg, tcfg = stage_config(cfg, stage)
    factor = cfg.highres_tokenizer.image_size // cfg.tokenizer.image_size if stage == "base" else 1
    if cfg.data.source == "shapes":
        images = stage_images(cfg, stage)
        check_images(images, size=vcfg.image_size, name=f"{stage} training images")

        def batch_fn(step):
            batch = images[epoch_batch_indices(len(images), tcfg.batch_size, tcfg.seed, step)]
            return random_crops(batch, vcfg.train_crop, vcfg.downsample, seed=tcfg.seed, step=step)

        return batch_fn
    rows = local_rows(batch_sharding(mesh), tcfg.batch_size)
    reader = open_image_reader(cfg.data, vcfg.image_size * factor, rows=rows.stop - rows.start, seed=tcfg.seed)

    def stream_fn(step):
        batch, _ = reader(step)
        batch = downsample(batch, factor) if factor > 1 else batch
        return random_crops(batch, vcfg.train_crop, vcfg.downsample, seed=tcfg.seed, step=step)

    return Prefetch(stream_fn)


def random_crops(images_NxSxSx3: np.ndarray, crop: int, multiple: int, *, seed: int, step: int) -> np.ndarray:
    """One random ``crop × crop`` window per image, a function of ``(seed, step)``, at offsets on the
    token grid (multiples of ``multiple``) so a crop's tokens are the full image's."""
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
    ``finetune_from``: a finished run whose encoder and codebook stay frozen under a new decoder (§2.5)."""
    run_dir = Path(run_dir)
    vcfg, tcfg = stage_config(cfg, stage)
    mesh = make_mesh(cfg.mesh)
    check_batch_size(tcfg.batch_size, mesh, f"{TRAIN_SECTIONS[stage]}.batch_size")
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
    run = RunSpec(
        run_dir, tcfg, _metadata(run_dir, cfg, stage, finetune_from), model_of=lambda s: s.vqgan,
        defaults={"tokenizer": dataclasses.asdict(VQGANConfig()), "data": dataclasses.asdict(DataConfig())},
        # how the transformer stages are fed, and how fast, never changes this stage's images
        ignore=[f"data.{name}" for name in ("feed", "tokens", "text_cache_max", *DATA_RUNTIME_FIELDS)],
    )
    run.check_config()  # before any data is read
    done = run.finished()  # then train() just loads the final state
    lpips = None if done else build_perceptual(vcfg)  # missing weights fail before the init
    state = init_tokenizer_state(vcfg, tcfg, init_key(tcfg.seed), vqgan=vqgan, finetune=finetune)
    step_fn = make_tokenizer_step(vcfg, tcfg, finetune=finetune, lpips=lpips)
    state = train(run, state=state, step_fn=step_fn, batch_fn=None if done else stage_batches(cfg, stage, mesh),
                  mesh=mesh, progress=progress)  # data-parallel: weights replicated
    return state.vqgan


def evaluate_tokenizer(vqgan: VQGAN, images, captions, *, batch_size: int = 256) -> dict:
    """PSNR, codebook use, and ``accuracy``: the fraction of reconstructions whose caption the
    Shapes evaluator still accepts."""
    ids = encode_images(vqgan, images, batch_size=batch_size)
    recon = decode_tokens(vqgan, ids, batch_size=batch_size)
    counts = np.bincount(ids.ravel(), minlength=vqgan.quantizer.codebook_size)
    return {
        "n_images": len(images), "psnr": psnr(images, recon),
        "usage": float(np.mean(counts > 0)), "perplexity": float(perplexity(jnp.asarray(counts))),
        "accuracy": caption_accuracy(recon, captions)["accuracy"],
    }


