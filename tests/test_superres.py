"""The super-resolution token translator (Muse §2.4, Figure 4, Table 6)."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mini.models import layers, transformer as T
from muse_mini.config import SuperResConfig, VQGANConfig, get_preset
from muse_mini.models.codec import decode_tokens
from muse_mini.models.superres import SuperResTransformer, _children_to_grid, _patches
from muse_mini.models.vqgan import VQGAN
from muse_mini.training.losses import superres_loss

VOCAB, SEQ, LOW_VOCAB, LOW_SEQ, TEXT_W, L = 12, 16, 10, 4, 8, 3
CFG = SuperResConfig(depth=2, width=32, mlp_dim=128, num_heads=4, lowres_depth=1)


def key(seed):
    # RBG keys compile far faster than threefry on CPU; the model accepts either.
    return jax.random.key(seed, impl="rbg")


# A tiny low-res tokenizer, f=2: the 2×2 low-res grid draws a 4×4 image.
LOW_TOKENIZER = VQGANConfig(image_size=4, base_channels=4, channel_mult=(1, 2), num_res_blocks=1,
                            codebook_size=LOW_VOCAB, code_dim=4, perceptual="none", adversarial_weight=0.0,
                            decoder_channels=4, decoder_res_blocks=1)


def make(cfg=CFG, k=None):
    tokenizer = VQGAN(LOW_TOKENIZER, key=key(9)) if cfg.lowres_input == "pixels" else None
    return SuperResTransformer(
        cfg, vocab_size=VOCAB, seq_len=SEQ, lowres_vocab_size=LOW_VOCAB, lowres_seq_len=LOW_SEQ,
        text_width=TEXT_W, lowres_tokenizer=tokenizer, key=key(0) if k is None else k,
    )


@pytest.fixture(scope="module")
def model():
    return eqx.filter_jit(make)()


def _batch(batch=4):
    k1, k2, k3 = jax.random.split(key(1), 3)
    tokens = jax.random.randint(k1, (batch, SEQ), 0, VOCAB)
    lowres = jax.random.randint(k2, (batch, LOW_SEQ), 0, LOW_VOCAB)
    text = jax.random.normal(k3, (batch, L, TEXT_W))
    text_mask = jnp.broadcast_to(jnp.array([True, True, False]), (batch, L))
    return tokens, lowres, text, text_mask


call = eqx.filter_jit(lambda m, t, lo, x, mask: m(t, lo, x, mask))


def test_output_shape_and_structure(model):
    tokens, lowres, text, text_mask = (a[0] for a in _batch())
    logits = call(model, tokens, lowres, text, text_mask)
    assert logits.shape == (SEQ, VOCAB) and logits.dtype == jnp.float32
    assert model.mask_id == VOCAB
    assert model.lowres_embed.weight.shape == (LOW_VOCAB, CFG.width)  # low-res is never masked
    # Figure 4: self-attention-only low-res encoder; the high-res decoder is the base model's.
    assert model.lowres_encoder.blocks.cross_attn is None
    assert model.lowres_encoder.blocks.self_attn.q_proj.shape[0] == CFG.lowres_depth
    assert isinstance(model.decoder, T.MaskedTokenTransformer)
    assert model.decoder.blocks.blocks.cross_attn.q_proj.shape[0] == CFG.depth


def test_batched_call_matches_vmap(model):
    batch = _batch()
    np.testing.assert_allclose(call(model, *batch), jax.vmap(model)(*batch), rtol=1e-5, atol=1e-5)
    tokens, lowres, text, text_mask = batch
    with pytest.raises(ValueError, match="same batch"):
        jax.eval_shape(lambda: model(tokens, lowres[0], text, text_mask))


def test_conditioning_text_and_lowres(model):
    tokens, lowres, text, text_mask = (a[0] for a in _batch())
    base = call(model, tokens, lowres, text, text_mask)
    # Padded text positions are ignored; kept ones matter.
    padded = jnp.where(text_mask[:, None], text, 77.0)
    np.testing.assert_array_equal(base, call(model, tokens, lowres, padded, text_mask))
    assert not np.array_equal(base, call(model, tokens, lowres, text * 2, text_mask))
    # With the text dropped (CFG's unconditional branch) the text values are
    # irrelevant, the output is finite, and the low-res tokens still condition.
    dropped = jnp.zeros_like(text_mask)
    uncond = call(model, tokens, lowres, text, dropped)
    assert np.isfinite(np.asarray(uncond)).all()
    np.testing.assert_array_equal(uncond, call(model, tokens, lowres, -text, dropped))
    assert not np.array_equal(uncond, call(model, tokens, (lowres + 1) % LOW_VOCAB, text, dropped))


def test_children_to_grid_puts_each_child_below_its_parent():
    """A 2×2 low-res grid over a 4×4 high-res one: child (a, b) of cell (i, j) lands at (2i + a, 2j + b)."""
    d = 3
    y = np.zeros((2, 4, 4 * d), np.float32)  # batch 2, 4 parents, 4 children of width 3
    for bi, cell, child in np.ndindex(2, 4, 4):
        y[bi, cell, child * d:(child + 1) * d] = [bi, cell, child]
    grid = np.asarray(_children_to_grid(jnp.asarray(y), 16)).reshape(2, 4, 4, d)
    for bi, row, col in np.ndindex(2, 4, 4):
        parent = (row // 2) * 2 + col // 2
        child = (row % 2) * 2 + col % 2
        np.testing.assert_array_equal(grid[bi, row, col], [bi, parent, child])


def test_patches_are_the_token_cells_in_row_major_order():
    image = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    patches = np.asarray(_patches(jnp.asarray(image), 2))
    assert patches.shape == (2, 4, 12)
    for cell in range(4):
        r, c = divmod(cell, 2)
        np.testing.assert_array_equal(patches[:, cell], image[:, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(2, 12))


def test_patches_with_a_margin_are_overlapping_windows_with_repeated_borders():
    image = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    patches = np.asarray(_patches(jnp.asarray(image), 4, margin=1))
    assert patches.shape == (2, 4, 6 * 6 * 3)
    for cell in range(4):
        r, c = divmod(cell, 2)
        ys = np.clip(np.arange(4 * r - 1, 4 * r + 5), 0, 7)  # one pixel beyond the cell, clamped
        xs = np.clip(np.arange(4 * c - 1, 4 * c + 5), 0, 7)
        np.testing.assert_array_equal(patches[:, cell], image[:, ys][:, :, xs].reshape(2, -1))
    np.testing.assert_array_equal(_patches(jnp.asarray(image), 4, margin=0), _patches(jnp.asarray(image), 4))


def test_lowres_margin_needs_pixel_input():
    with pytest.raises(ValueError, match="superres.lowres_margin: expected 0, or a positive margin"):
        dataclasses.replace(CFG, lowres_margin=1)
    model = make(dataclasses.replace(CFG, lowres_input="pixels", lowres_margin=1))
    assert model.lowres_patch_proj.weight.shape == (4 * 4 * 3, CFG.width)  # 2×2 cells + 1 pixel each side
    tokens, lowres, text, text_mask = _batch()
    assert call(model, tokens, lowres, text, text_mask).shape == (4, SEQ, VOCAB)


def test_lowres_skip_adds_one_projection_and_changes_the_output():
    skip = make(dataclasses.replace(CFG, lowres_skip=True))
    plain = make(CFG)
    assert skip.lowres_children.weight.shape == (CFG.width, 4 * CFG.width) and plain.lowres_children is None
    without = eqx.tree_at(lambda m: m.lowres_children, skip, None)
    for a, b in zip(jax.tree.leaves(without), jax.tree.leaves(plain), strict=True):  # otherwise the same
        np.testing.assert_array_equal(a, b)
    batch = _batch()
    assert not np.allclose(call(skip, *batch), call(plain, *batch))


PIXELS = dataclasses.replace(CFG, lowres_input="pixels", lowres_skip=True)


def test_pixel_input_takes_ids_and_decodes_them_inside_like_the_tokenizer():
    """The pixel path's input is the low-res ids (Figure 4); the frozen decoder inside draws
    exactly the uint8 image the tokenizer's own decode gives."""
    model = make(PIXELS)
    assert model.lowres_embed is None and model.lowres_patch_proj.weight.shape == (2 * 2 * 3, CFG.width)
    tokens, lowres, text, text_mask = _batch()
    drawn = eqx.filter_jit(lambda m, ids: m.lowres_pixels(ids))(model, lowres)
    np.testing.assert_array_equal(drawn, decode_tokens(VQGAN(LOW_TOKENIZER, key=key(9)), np.asarray(lowres)))
    logits = call(model, tokens, lowres, text, text_mask)
    assert logits.shape == (4, SEQ, VOCAB) and np.isfinite(np.asarray(logits)).all()
    assert not np.allclose(logits, call(model, tokens, (lowres + 1) % LOW_VOCAB, text, text_mask))


def test_pixel_input_needs_its_tokenizer_and_refuses_images_by_name():
    with pytest.raises(ValueError, match="lowres_tokenizer: superres.lowres_input='pixels' needs"):
        SuperResTransformer(PIXELS, vocab_size=VOCAB, seq_len=SEQ, lowres_vocab_size=LOW_VOCAB,
                            lowres_seq_len=LOW_SEQ, text_width=TEXT_W, key=key(0))
    tokens, _, text, text_mask = _batch()
    with pytest.raises(ValueError, match=r"lowres: expected low-res token ids of shape \(4,\)"):
        make(PIXELS)(tokens, jnp.zeros((4, 4, 4, 3)), text, text_mask)


def test_the_frozen_decoder_gets_no_gradient_and_no_update(tmp_path):
    """A training step changes the pixel path's projection but leaves the decoder bit for bit
    (no gradient, no weight decay), and a saved model decodes the same after loading."""
    from muse_mini.config import TrainConfig
    from muse_mini.runs.checkpoint import load_checkpoint, save_checkpoint
    from muse_mini.training.losses import init_train_state, make_train_step, trainable
    from muse_mini.training.optim import make_optimizer

    model = make(PIXELS)
    assert not any(jax.tree.leaves(trainable(model).lowres_decoder))
    opt = make_optimizer(TrainConfig(steps=10, optimizer="adamw", lr=1e-2, weight_decay=0.5, warmup_steps=1))
    state = init_train_state(model, opt)
    tokens, lowres, text, text_mask = _batch()
    batch = {"hr_tokens": tokens, "tokens": lowres, "text": text, "text_mask": text_mask}

    def loss_fn(m, b, k):
        return superres_loss(m, b["hr_tokens"], b["tokens"], b["text"], b["text_mask"], k, cond_drop=0.1)

    step = eqx.filter_jit(make_train_step(loss_fn, opt))
    for s in range(2):
        state, metrics = step(state, batch, key(s))
    for a, b in zip(jax.tree.leaves(model.lowres_decoder), jax.tree.leaves(state.model.lowres_decoder), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(model.lowres_patch_proj.weight, state.model.lowres_patch_proj.weight)
    grads = eqx.filter_grad(lambda m: loss_fn(m, batch, key(0))[0])(model)
    assert all(not np.any(g) for g in jax.tree.leaves(grads.lowres_decoder))  # stop_gradient

    save_checkpoint(tmp_path / "model.eqx", state.model, metadata={})
    loaded = load_checkpoint(tmp_path / "model.eqx", eqx.filter_eval_shape(make, PIXELS))[0]
    np.testing.assert_array_equal(loaded.lowres_pixels(lowres), state.model.lowres_pixels(lowres))


def test_unknown_lowres_input_is_named():
    with pytest.raises(ValueError, match="superres.lowres_input: expected one of"):
        make(dataclasses.replace(CFG, lowres_input="rgb"))


def test_lowres_skip_needs_nested_grids():
    cfg = dataclasses.replace(CFG, lowres_skip=True)
    with pytest.raises(ValueError, match="lowres_skip: needs square grids"):
        SuperResTransformer(cfg, vocab_size=VOCAB, seq_len=SEQ, lowres_vocab_size=LOW_VOCAB, lowres_seq_len=9,
                            text_width=TEXT_W, key=key(0))


def test_logical_axes(model):
    arrays = jax.tree.leaves(model)
    names = jax.tree.leaves(layers.logical_axes(model), is_leaf=layers.is_axes)
    assert [len(n) for n in names] == [a.ndim for a in arrays]
    assert layers.logical_axes(model).lowres_encoder.blocks.mlp.fc1.weight == ("layers", "embed", "mlp")


def test_superres_loss(model):
    tokens, lowres, text, text_mask = _batch()
    loss_fn = eqx.filter_jit(superres_loss)
    loss, metrics = loss_fn(model, tokens, lowres, text, text_mask, key(2), cond_drop=jnp.float32(1.0))
    assert np.isfinite(float(loss)) and float(metrics["text_dropped"]) == 1.0
    assert 0.0 < float(metrics["mask_rate"]) <= 1.0
    # Dropping the text keeps the low-res conditioning: same as passing no text.
    no_text, _ = loss_fn(
        model, tokens, lowres, text, jnp.zeros_like(text_mask), key(2), cond_drop=jnp.float32(0.0)
    )
    np.testing.assert_allclose(loss, no_text, rtol=1e-6)


# --------------------------------------------------------------------------
# Sizes (abstract)


def abstract_superres(preset):
    cfg = get_preset(preset)
    return eqx.filter_eval_shape(
        SuperResTransformer, cfg.superres, vocab_size=cfg.highres_tokenizer.codebook_size,
        seq_len=cfg.highres_tokenizer.grid**2, lowres_vocab_size=cfg.tokenizer.codebook_size,
        lowres_seq_len=cfg.tokenizer.grid**2, text_width=cfg.text.width, key=jax.random.key(0),
    )


def test_cc3m_superres_is_268m():
    n = layers.count_params(abstract_superres("cc3m"))
    assert abs(n / 268e6 - 1) < 0.05, n


def test_paper_superres_matches_table6():
    shapes = abstract_superres("paper-3b")
    enc, dec = shapes.lowres_encoder.blocks, shapes.decoder.blocks.blocks
    assert enc.mlp.fc1.weight.shape == (16, 1024, 4096)  # 16 low-res encoder layers, MLP 4096
    assert enc.self_attn.q_proj.shape == (16, 1024, 16, 64)
    assert dec.mlp.fc1.weight.shape == (32, 1024, 4096)  # 32 layers, hidden 1024
    assert dec.cross_attn.k_proj.shape == (32, 1024, 16, 64)
    assert shapes.decoder.pos_embed.table.shape == (64 * 64, 1024)  # 512px / f=8
    assert shapes.lowres_pos.table.shape == (16 * 16, 1024)
    # The paper gives no total; ours is about 774M (see the docstring of _cc3m).
    assert 700e6 < layers.count_params(shapes) < 850e6
