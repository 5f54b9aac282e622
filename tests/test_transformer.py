"""The base masked transformer (Muse §2.3, §2.6, §2.7, Table 4) and its building blocks."""

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from muse_mini import transformer as T
from muse_mini.config import TransformerConfig, get_preset

VOCAB, SEQ, TEXT_W, L = 16, 9, 12, 5
CFG = TransformerConfig(depth=2, width=32, mlp_dim=128, num_heads=4)
AXIS_NAMES = {"embed", "mlp", "heads", "kv", "vocab", "layers", "text_embed", "seq"}


def make(cfg=CFG, seed=0):
    return T.BaseTransformer(cfg, vocab_size=VOCAB, seq_len=SEQ, text_width=TEXT_W, key=jax.random.key(seed))


def reconfigure(model, **changes):
    """``model``'s weights under a config differing only in static fields (dtype, dropout, ...).

    Building models is the slow part of these tests on CPU (each random draw
    compiles), so variants reuse one set of weights.
    """
    abstract = eqx.filter_eval_shape(make, dataclasses.replace(CFG, **changes))
    return jax.tree.unflatten(jax.tree.structure(abstract), jax.tree.leaves(model))


@pytest.fixture(scope="module")
def model():
    return eqx.filter_jit(make)()


@pytest.fixture(scope="module")
def example():
    k1, k2 = jax.random.split(jax.random.key(1))
    tokens = jax.random.randint(k1, (SEQ,), 0, VOCAB + 1)  # includes [MASK] = VOCAB
    text = jax.random.normal(k2, (L, TEXT_W))
    text_mask = jnp.array([True, True, True, False, False])
    return tokens, text, text_mask


call = eqx.filter_jit(lambda m, t, x, mask: m(t, x, mask))


def test_output_shape_dtype_and_mask_id(model, example):
    logits = call(model, *example)
    assert logits.shape == (SEQ, VOCAB) and logits.dtype == jnp.float32
    assert model.mask_id == VOCAB
    assert model.decoder.token_embed.weight.shape == (VOCAB + 1, CFG.width)  # + [MASK]
    assert model.decoder.head.out.weight.shape == (CFG.width, VOCAB)  # codebook only


def test_rejects_a_batch(model, example):
    tokens, text, text_mask = example
    with pytest.raises(ValueError, match="one example"):
        model(tokens[None], text, text_mask)
    with pytest.raises(ValueError, match="text"):
        model(tokens, text[:, :4], text_mask)


def test_logits_ignore_padded_text_positions(model, example):
    tokens, text, text_mask = example
    changed = jnp.where(text_mask[:, None], text, 100.0 * jax.random.normal(jax.random.key(9), text.shape))
    np.testing.assert_array_equal(call(model, tokens, text, text_mask), call(model, tokens, changed, text_mask))
    # ... while the kept positions do matter.
    assert not np.array_equal(call(model, tokens, text, text_mask), call(model, tokens, text * 2, text_mask))


def test_dropped_text_is_exactly_no_cross_attention(model, example):
    tokens, text, _ = example
    dropped = jnp.zeros((L,), bool)
    no_cross = eqx.tree_at(
        lambda m: (m.decoder.blocks.blocks.cross_attn, m.decoder.blocks.blocks.cross_norm), model, (None, None)
    )
    logits = call(model, tokens, text, dropped)
    assert np.isfinite(np.asarray(logits)).all()
    np.testing.assert_allclose(logits, call(no_cross, tokens, text, dropped), rtol=0, atol=1e-6)
    # Gradients stay finite too (the fully masked softmax must not produce NaNs).
    grads = eqx.filter_grad(lambda m: m(tokens, text, dropped).sum())(model)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_attention_goes_through_dot_product_attention(model, example, monkeypatch):
    calls = []
    original = jax.nn.dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs.get("mask") is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    jax.eval_shape(lambda: model(*example))
    assert calls == [False, True]  # self-attention, then masked cross-attention (scan traces once)


def _jaxpr(depth):
    abstract = eqx.filter_eval_shape(make, dataclasses.replace(CFG, depth=depth))
    params, static = eqx.partition(abstract, lambda x: isinstance(x, jax.ShapeDtypeStruct))
    args = (jnp.zeros((SEQ,), jnp.int32), jnp.zeros((L, TEXT_W)), jnp.ones((L,), bool))
    return jax.make_jaxpr(lambda p: eqx.combine(p, static)(*args))(params)


def test_layers_are_scanned():
    shallow, deep = _jaxpr(2), _jaxpr(8)
    assert len(shallow.eqns) == len(deep.eqns)
    assert sum(e.primitive.name == "scan" for e in deep.eqns) == 1


def test_logical_axes_name_every_dimension(model):
    axes = T.logical_axes(model)
    arrays = jax.tree.leaves(model)
    names = jax.tree.leaves(axes, is_leaf=T.is_axes)
    assert len(arrays) == len(names) and len(arrays) > 0
    for array, axis_names in zip(arrays, names):
        assert len(axis_names) == array.ndim
        assert set(axis_names) <= AXIS_NAMES
        assert len(set(axis_names)) == len(axis_names), axis_names  # shardable: no repeats
    stacked = jax.tree.leaves(T.logical_axes(model.decoder.blocks), is_leaf=T.is_axes)
    assert all(n[0] == "layers" for n in stacked)
    assert T.logical_axes(model).decoder.token_embed.weight == ("vocab", "embed")
    assert T.logical_axes(model).text_proj.weight == ("text_embed", "embed")


def test_logical_axes_on_abstract_model():
    cfg = get_preset("toy")
    shapes = eqx.filter_eval_shape(
        T.BaseTransformer, cfg.base, vocab_size=cfg.tokenizer.codebook_size,
        seq_len=cfg.tokenizer.grid**2, text_width=cfg.text.width, key=jax.random.key(0),
    )
    names = jax.tree.leaves(T.logical_axes(shapes), is_leaf=T.is_axes)
    assert [len(n) for n in names] == [len(x.shape) for x in jax.tree.leaves(shapes)]


def test_bfloat16_compute_keeps_float32_params(model, example):
    model = reconfigure(model, dtype="bfloat16")
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(model))
    logits = call(model, *example)
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
    jaxpr = jax.make_jaxpr(lambda: model(*example))()
    assert "bf16" in str(jaxpr)  # activations really run in bfloat16
    grads = eqx.filter_grad(lambda m: m(*example).sum())(model)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="dtype"):
        eqx.filter_eval_shape(make, dataclasses.replace(CFG, dtype="float8"))


def test_dropout_uses_the_key(model, example):
    model = reconfigure(model, dropout=0.3)
    plain = call(model, *example)
    np.testing.assert_array_equal(plain, call(model, *example))  # no key: deterministic
    noisy = eqx.filter_jit(lambda m, k: m(*example, key=k))(model, jax.random.key(3))
    assert not np.allclose(plain, noisy)


def test_remat_matches_plain_gradients(model, example):
    remat = reconfigure(model, remat=True)
    assert remat.decoder.blocks.remat
    grad = eqx.filter_jit(eqx.filter_grad(lambda m: m(*example).sum()))
    for a, b in zip(jax.tree.leaves(grad(model)), jax.tree.leaves(grad(remat))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Loss


def test_masked_cross_entropy_ignores_unmasked_positions():
    logits = jax.random.normal(jax.random.key(0), (2, 6, 5))
    targets = jnp.array([[0, 1, 2, 3, 4, 0], [1, 1, 1, 1, 1, 1]])
    mask = jnp.array([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]], bool)
    loss, acc = T.masked_cross_entropy(logits, targets, mask)
    changed = jnp.where(mask[..., None], logits, 50.0 * jax.random.normal(jax.random.key(1), logits.shape))
    np.testing.assert_allclose(T.masked_cross_entropy(changed, targets, mask), (loss, acc), rtol=1e-6)
    nll = -jax.nn.log_softmax(logits)[jnp.array([0, 0, 1]), jnp.array([0, 2, 5]), jnp.array([0, 2, 1])]
    np.testing.assert_allclose(loss, nll.mean(), rtol=1e-6)  # mean over masked tokens of the batch


def _batch(batch=8):
    k1, k2 = jax.random.split(jax.random.key(7))
    tokens = jax.random.randint(k1, (batch, SEQ), 0, VOCAB)
    text = jax.random.normal(k2, (batch, L, TEXT_W))
    text_mask = jnp.broadcast_to(jnp.arange(L) < 3, (batch, L))
    return tokens, text, text_mask


def test_loss_scores_only_masked_positions():
    tokens, _, text_mask = _batch()
    logits = jax.random.normal(jax.random.key(2), (*tokens.shape, VOCAB))

    def predict(perturb):
        def fn(inputs, text_mask, key):
            unmasked = (inputs != VOCAB)[..., None]
            return logits + perturb * unmasked * jax.random.normal(jax.random.key(5), logits.shape)

        return fn

    kwargs = dict(mask_id=VOCAB, cond_drop=0.1)
    loss, metrics = T.masked_prediction_loss(predict(0.0), tokens, text_mask, jax.random.key(1), **kwargs)
    loss2, _ = T.masked_prediction_loss(predict(30.0), tokens, text_mask, jax.random.key(1), **kwargs)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    assert 0.0 < float(metrics["mask_rate"]) <= 1.0


def test_loss_metrics_and_conditioning_dropout(model):
    tokens, text, text_mask = _batch()
    loss_fn = eqx.filter_jit(T.masked_token_loss)
    loss, metrics = loss_fn(model, tokens, text, text_mask, jax.random.key(0), cond_drop=0.0)
    assert set(metrics) == {"loss", "accuracy", "mask_rate", "text_dropped"}
    assert np.isfinite(float(loss)) and float(metrics["text_dropped"]) == 0.0
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    # cond_drop = 1 removes every example's text: identical to passing no text at all.
    dropped, m1 = loss_fn(model, tokens, text, text_mask, jax.random.key(0), cond_drop=1.0)
    no_text, _ = loss_fn(model, tokens, text, jnp.zeros_like(text_mask), jax.random.key(0), cond_drop=0.0)
    assert float(m1["text_dropped"]) == 1.0
    np.testing.assert_allclose(dropped, no_text, rtol=1e-6)
    assert float(dropped) != pytest.approx(float(loss), rel=1e-6)


def test_a_few_adam_steps_reduce_the_loss(model):
    tokens, text, text_mask = _batch(16)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state):
        (loss, _), grads = eqx.filter_value_and_grad(T.masked_token_loss, has_aux=True)(
            model, tokens, text, text_mask, jax.random.key(0), cond_drop=0.1
        )
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state, loss

    losses = []
    for _ in range(10):
        model, opt_state, loss = step(model, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


# --------------------------------------------------------------------------
# Sizes (counted abstractly: nothing is allocated)


def abstract_base(preset):
    cfg = get_preset(preset)
    return eqx.filter_eval_shape(
        T.BaseTransformer, cfg.base, vocab_size=cfg.tokenizer.codebook_size,
        seq_len=cfg.tokenizer.grid**2, text_width=cfg.text.width, key=jax.random.key(0),
    )


def test_count_params_real_equals_abstract(model):
    real = model
    abstract = eqx.filter_eval_shape(make)
    assert T.count_params(real) == T.count_params(abstract) == sum(x.size for x in jax.tree.leaves(real))


def test_cc3m_base_is_632m():
    n = T.count_params(abstract_base("cc3m"))
    assert abs(n / 632e6 - 1) < 0.05, n


def test_paper_base_is_3b_and_table4_shaped():
    start = time.perf_counter()
    shapes = abstract_base("paper-3b")
    n = T.count_params(shapes)
    assert time.perf_counter() - start < 30
    assert abs(n / 3e9 - 1) < 0.10, n
    blocks = shapes.decoder.blocks.blocks
    assert blocks.mlp.fc1.weight.shape == (48, 2048, 8192)  # Table 4: 48 layers, 2048 wide, MLP 8192
    assert blocks.cross_attn.q_proj.shape == (48, 2048, 32, 64)
    assert shapes.decoder.token_embed.weight.shape == (8193, 2048)
    assert shapes.text_proj.weight.shape == (4096, 2048)  # T5-XXL
