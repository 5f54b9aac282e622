"""The VQGAN tokenizer: shapes, input checks, discriminator, decoder finetuning, training glue."""

import dataclasses
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from muse_mini.config import VQGANConfig, get_preset
from muse_mini.training.keys import init_key
from muse_mini.models.quantizer import perplexity
from muse_mini.models.codec import decode_token_batch, decode_tokens, encode_images, reconstruct
from muse_mini.runs.load import load_tokenizer
from muse_mini.training.tokenizer import random_crops, train_tokenizer
from muse_mini.models.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from muse_mini.models.images import check_images, to_float, to_uint8
from muse_mini.models.vqgan import VQGAN, decoder_filter, grow_decoder

# f=2: the fewest layers, so the smoke runs compile quickly.
TINY = VQGANConfig(
    image_size=32, base_channels=4, channel_mult=(1, 2), num_res_blocks=1, codebook_size=16,
    code_dim=4, perceptual="none", decoder_channels=4, decoder_res_blocks=1, disc_channels=4, disc_layers=1,
)


def _abstract(cfg, key=0):
    return eqx.filter_eval_shape(VQGAN, cfg, key=jax.random.key(key))


@pytest.mark.parametrize("mult, f", [((1, 2, 2), 4), ((1, 1, 2, 2), 8), ((1, 1, 2, 2, 4), 16)])
@pytest.mark.parametrize("hw", [(32, 32), (48, 80)])
def test_token_grid_is_image_over_f(mult, f, hw):
    cfg = dataclasses.replace(TINY, channel_mult=mult)
    assert cfg.downsample == f
    vqgan = _abstract(cfg)
    img = jax.ShapeDtypeStruct((*hw, 3), jnp.float32)
    ids = eqx.filter_eval_shape(lambda m, x: m.encode(x), vqgan, img)
    assert ids.shape == (hw[0] // f, hw[1] // f) and jnp.issubdtype(ids.dtype, jnp.integer)
    recon = eqx.filter_eval_shape(lambda m, i: m.decode_ids(i), vqgan, ids)
    assert recon.shape == (*hw, 3)
    out, aux = eqx.filter_eval_shape(lambda m, x: m(x), vqgan, img)
    assert out.shape == (*hw, 3) and aux.ids.shape == ids.shape


@pytest.mark.parametrize("mult", [(1, 2, 2), (1, 1, 2, 2)])
def test_local_encoder_sees_2f_plus_1_pixels(mult):
    """A pixel changes exactly the latents whose (2f+1)-px window holds it."""
    cfg = dataclasses.replace(TINY, channel_mult=mult, encoder="local")
    f = cfg.downsample
    enc = VQGAN(cfg, key=jax.random.key(0)).encoder
    x = jax.random.uniform(jax.random.key(1), (3, 48, 48), minval=-1.0, maxval=1.0)
    bumped = x.at[:, 20, 29].add(0.5)
    changed = np.asarray(jnp.any(enc(bumped) != enc(x), axis=0))
    # Padding 1 at every 3×3 conv: latent row i reads pixel rows f(i-1) ... f(i+1).
    rows = [i for i in range(48 // f) if f * (i - 1) <= 20 <= f * (i + 1)]
    cols = [j for j in range(48 // f) if f * (j - 1) <= 29 <= f * (j + 1)]
    want = np.zeros_like(changed)
    want[np.ix_(rows, cols)] = True
    np.testing.assert_array_equal(changed, want)


def test_local_encoder_gives_white_one_code_wherever_it_is():
    """White cells far from any object share one latent, and so one code."""
    cfg = dataclasses.replace(TINY, channel_mult=(1, 2, 2), encoder="local")
    vqgan = VQGAN(cfg, key=jax.random.key(0))
    img = np.ones((32, 32, 3), np.float32)
    img[2:6, 2:6] = [-0.5, 0.2, 0.9]  # one small object in a corner
    z = np.asarray(vqgan.latents(jnp.asarray(img)))
    far = z[3:, 3:].reshape(-1, z.shape[-1])  # cells whose 9-px windows are all white, incl. borders
    np.testing.assert_array_equal(far, np.broadcast_to(far[0], far.shape))
    assert not np.array_equal(z[0, 0], far[0])
    white = np.asarray(vqgan.latents(jnp.ones((32, 32, 3))))
    np.testing.assert_array_equal(white.reshape(-1, white.shape[-1])[0], far[0])
    # The jitted uint8 path too (its float conversion is not exact).
    assert np.unique(encode_images(vqgan, np.full((3, 32, 32, 3), 255, np.uint8))).size == 1


def test_encoder_option_is_checked():
    with pytest.raises(ValueError, match="VQGANConfig.encoder: expected 'full' or 'local'"):
        dataclasses.replace(TINY, encoder="conv")


def test_bad_inputs_are_clear_errors():
    vqgan = _abstract(TINY)
    with pytest.raises(ValueError, match=r"img: expected one \(H, W, 3\) image"):
        eqx.filter_eval_shape(lambda m, x: m.encode(x), vqgan, jax.ShapeDtypeStruct((31, 32, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"images: expected \(N, 32, 32, 3\) uint8 or float, got \(2, 64, 64, 3\)"):
        check_images(np.zeros((2, 64, 64, 3), np.uint8), size=32)
    with pytest.raises(ValueError, match=r"got \(32, 32, 3\)"):
        check_images(np.zeros((32, 32, 3), np.uint8), size=32)
    with pytest.raises(ValueError, match="dtype int64"):
        check_images(np.zeros((1, 32, 32, 3), np.int64), size=32)
    with pytest.raises(ValueError, match="multiples of 4"):
        check_images(np.zeros((1, 30, 32, 3), np.uint8), multiple_of=4)
    with pytest.raises(ValueError, match=r"float images must lie in \[-1, 1\], got values in \[0, 200\]"):
        check_images(np.concatenate([np.zeros((1, 32, 32, 3)), np.full((1, 32, 32, 3), 200.0)]), size=32)
    check_images(np.full((1, 32, 32, 3), 1.0, np.float32), size=32)  # the range's edge is fine


def test_uint8_float_round_trip():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    f = to_float(x)
    assert float(f.min()) == -1.0 and float(f.max()) == 1.0
    np.testing.assert_array_equal(to_uint8(f), x)
    np.testing.assert_array_equal(to_uint8(np.array([-3.0, 3.0])), [0, 255])


def test_discriminator_patch_logits_and_hinge_losses():
    disc = eqx.filter_eval_shape(PatchDiscriminator, 8, 2, key=jax.random.key(0))
    logits = eqx.filter_eval_shape(lambda d, x: d(x), disc, jax.ShapeDtypeStruct((32, 32, 3), jnp.float32))
    assert logits.shape == (6, 6)
    assert float(hinge_d_loss(jnp.full(4, 2.0), jnp.full(4, -2.0))) == 0.0
    assert float(hinge_d_loss(jnp.zeros(4), jnp.zeros(4))) == 1.0
    assert float(hinge_g_loss(jnp.full(4, 0.5))) == -0.5


def test_grow_decoder_keeps_encoder_and_codebook():
    small = VQGAN(TINY, key=jax.random.key(0))
    big_cfg = dataclasses.replace(TINY, decoder_channels=8, decoder_res_blocks=2)
    big = grow_decoder(small, big_cfg, key=jax.random.key(1))
    kept = jax.tree_util.tree_leaves((big.encoder, big.quantizer))
    assert all(a is b for a, b in zip(kept, jax.tree_util.tree_leaves((small.encoder, small.quantizer))))
    assert big.decoder.conv_in.weight.shape[0] == 2 * small.decoder.conv_in.weight.shape[0]
    spec = decoder_filter(big)
    assert not any(jax.tree_util.tree_leaves((spec.encoder, spec.quantizer)))
    assert all(jax.tree_util.tree_leaves(spec.decoder))
    with pytest.raises(ValueError, match="codebook_size and code_dim"):
        grow_decoder(small, dataclasses.replace(big_cfg, codebook_size=32), key=jax.random.key(1))


def test_random_crops_are_pure_and_on_the_grid():
    x = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    a = random_crops(x, 32, 4, seed=0, step=5)
    np.testing.assert_array_equal(a, random_crops(x, 32, 4, seed=0, step=5))
    assert a.shape == (3, 32, 32, 3)
    for crop, img in zip(a, x):
        hits = [(t, l) for t in range(0, 33, 4) for l in range(0, 33, 4)
                if np.array_equal(img[t:t + 32, l:l + 32], crop)]
        assert hits
    assert random_crops(x, 0, 4, seed=0, step=5) is x


# --------------------------------------------------------------------------
# Training glue: a tiny run through the shared trainer, then §2.5 finetuning.


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tok = dataclasses.replace(TINY, adversarial_weight=0.1, adversarial_start=2, restart_every=2)
    cfg = get_preset("toy", ["data.num_examples=16", "tokenizer_train.steps=3", "tokenizer_train.batch_size=4",
                             "tokenizer_train.warmup_steps=1", "tokenizer_train.checkpoint_every=3",
                             "tokenizer_train.log_every=1"])
    cfg = dataclasses.replace(cfg, tokenizer=tok)
    run = tmp_path_factory.mktemp("runs") / "tokenizer-base"
    trained = train_tokenizer(cfg, "base", run, progress=False)
    return cfg, run, trained


def test_smoke_training_writes_a_loadable_run(smoke_run):
    from muse_mini.runs.layout import read_metrics

    cfg, run, trained = smoke_run
    assert (run / "config.json").is_file() and (run / "final.eqx").is_file()
    metrics = read_metrics(run)
    assert list(metrics["step"]) == [0, 1, 2]
    for name in ("loss", "recon", "codebook", "commit", "perceptual", "adversarial", "disc", "usage",
                 "perplexity", "psnr"):
        assert np.all(np.isfinite(metrics[name])), name
    assert metrics["disc"][0] == 0.0 and metrics["disc"][2] != 0.0  # discriminator on from step 2
    assert metrics["perceptual"].max() == 0.0  # perceptual="none": off, and reported as 0

    loaded = load_tokenizer(run)
    for a, b in zip(jax.tree_util.tree_leaves(eqx.filter(trained, eqx.is_array)),
                    jax.tree_util.tree_leaves(eqx.filter(loaded, eqx.is_array))):
        np.testing.assert_array_equal(a, b)

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    ids = encode_images(loaded, images)
    assert ids.shape == (3, 16, 16) and ids.dtype == np.int32 and ids.max() < 16
    out = decode_tokens(loaded, ids)
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(reconstruct(loaded, images), out)
    np.testing.assert_array_equal(decode_tokens(loaded, ids.reshape(3, -1)), out)
    flat = jnp.asarray(ids.reshape(3, -1))
    np.testing.assert_array_equal(eqx.filter_jit(decode_token_batch)(loaded, flat), out)
    assert float(perplexity(jnp.bincount(jnp.asarray(ids).ravel(), length=16))) >= 1.0
    with pytest.raises(ValueError, match=r"images: expected \(N, 32, 32, 3\)"):
        encode_images(loaded, np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"ids: values must be in \[0, 16\)"):
        decode_tokens(loaded, np.full((1, 16, 16), 16))


def test_finished_run_writes_the_model_alone_and_a_run_without_it_is_refused(smoke_run, tmp_path):
    """model.eqx holds the VQGAN's leaves only (no optimiser, no discriminator); a run
    trained before model.eqx existed (final.eqx only) gets one line saying what to do."""
    from muse_mini.runs.checkpoint import read_header

    _, run, trained = smoke_run
    paths = [leaf["path"] for leaf in read_header(run / "model.eqx")["leaves"]]
    wanted = [jax.tree_util.keystr(p) for p, _ in
              jax.tree_util.tree_flatten_with_path(eqx.filter(trained, eqx.is_array))[0]]
    assert paths == wanted
    final_paths = [leaf["path"] for leaf in read_header(run / "final.eqx")["leaves"]]
    assert any(p.startswith(".opt_g") for p in final_paths) and any(p.startswith(".disc") for p in final_paths)
    assert not any("opt" in p or "disc" in p for p in paths)

    legacy = tmp_path / "legacy"
    shutil.copytree(run, legacy)
    (legacy / "model.eqx").unlink()
    with pytest.raises(FileNotFoundError, match=r"legacy: no model\.eqx .*: retrain it, or delete its DONE\.json"):
        load_tokenizer(legacy)


def test_decoder_finetune_freezes_encoder_and_codebook(smoke_run, tmp_path):
    """§2.5: a larger decoder is trained; encoder and codebook stay bit-identical."""
    cfg, run, base = smoke_run
    big = dataclasses.replace(cfg.tokenizer, decoder_channels=8, decoder_res_blocks=2, adversarial_weight=0.0)
    cfg = get_preset("toy", ["data.num_examples=16", "tokenizer_train.steps=2", "tokenizer_train.batch_size=4"])
    tuned = train_tokenizer(dataclasses.replace(cfg, tokenizer=big), "base", tmp_path / "ft",
                            progress=False, finetune_from=run)
    same = lambda a, b: all(  # noqa: E731
        np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )
    assert same(tuned.encoder, base.encoder)
    assert same(tuned.quantizer.codebook_KxD, base.quantizer.codebook_KxD)
    fresh = grow_decoder(base, big, key=jax.random.fold_in(init_key(cfg.tokenizer_train.seed), 1))
    assert not same(tuned.decoder, fresh.decoder)  # the decoder did train
    assert load_tokenizer(tmp_path / "ft").decoder.conv_in.weight.shape[0] == 16  # 8 × mult 2
    with pytest.raises(ValueError, match="only decoder_\\* may differ"):
        train_tokenizer(dataclasses.replace(cfg, tokenizer=dataclasses.replace(big, code_dim=8)), "base",
                        tmp_path / "bad", progress=False, finetune_from=run)


def test_decoder_stage_is_the_highres_tokenizer_with_the_larger_decoder(tmp_path, capsys):
    """Stage "decoder" (§2.5): cfg.decoder sizes the decoder, cfg.decoder_train trains it, and it
    cannot run without the tokenizer it finetunes."""
    from muse_mini.cli import main
    from muse_mini.training.tokenizer import stage_config

    cfg = get_preset("toy", ["decoder.channels=24", "decoder.res_blocks=3", "decoder_train.steps=7"])
    vcfg, tcfg = stage_config(cfg, "decoder")
    assert (vcfg.decoder_channels, vcfg.decoder_res_blocks, tcfg.steps) == (24, 3, 7)
    assert dataclasses.replace(vcfg, decoder_channels=cfg.highres_tokenizer.decoder_channels,
                               decoder_res_blocks=cfg.highres_tokenizer.decoder_res_blocks) == cfg.highres_tokenizer
    with pytest.raises(ValueError, match="finetune_from: stage 'decoder' finetunes a finished high-res"):
        train_tokenizer(cfg, "decoder", tmp_path / "decoder", progress=False)
    assert not (tmp_path / "decoder").exists()
    assert main(["train-tokenizer", "--stage", "decoder", "--run", str(tmp_path / "decoder")]) == 2
    assert "--finetune-decoder-from: --stage decoder needs" in capsys.readouterr().err


def test_cli_reconstruct(smoke_run, tmp_path):
    from muse_mini.cli.reconstruct import run as _cli_reconstruct

    _, run, _ = smoke_run
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(src / "a.png")
    args = type("Args", (), {"run": str(run), "images": str(src), "out": str(out)})
    _cli_reconstruct(args)
    assert np.asarray(Image.open(out / "a.png")).shape == (32, 32, 3)
    # Another size is resized and centre-cropped to the tokenizer's, as training data is.
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src / "b.png")
    _cli_reconstruct(args)
    assert np.asarray(Image.open(out / "b.png")).shape == (32, 32, 3)


def test_each_tokenizer_stage_trains_on_its_own_schedule():
    from muse_mini.training.tokenizer import stage_config

    cfg = get_preset("toy", ["highres_tokenizer_train.steps=7"])
    assert stage_config(cfg, "base") == (cfg.tokenizer, cfg.tokenizer_train)
    vcfg, tcfg = stage_config(cfg, "highres")
    assert vcfg == cfg.highres_tokenizer and tcfg.steps == 7
    assert cfg.tokenizer_train.steps == 2400  # the base tokenizer's own schedule is untouched
    with pytest.raises(ValueError, match=r"stage: expected one of"):
        stage_config(cfg, "middle")
