"""The base masked transformer (Muse §2.3, §2.6, §2.7, Table 4) and its building blocks.

Compilation dominates on CPU, so one model is built per file, its variants
(dtype, dropout, remat) reuse its weights, properties that need no numbers are
checked by tracing, and the only compiled gradient is the training step.
"""

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from muse_mini.models import layers, transformer as T
from muse_mini.models.constraints import with_layout
from muse_mini.training import losses
from muse_mini.config import TransformerConfig, get_preset

VOCAB, SEQ, TEXT_W, L = 16, 9, 12, 5
CFG = TransformerConfig(depth=2, width=32, mlp_dim=128, num_heads=4)
AXIS_NAMES = {"embed", "embed_out", "mlp", "heads", "kv", "vocab", "layers", "text_embed", "seq"}


def key(seed):
    # The model works with any key type; RBG keys compile far faster than the
    # default threefry on CPU (threefry is traced in test_default_keys_trace).
    return jax.random.key(seed, impl="rbg")


def make(cfg=CFG, k=None):
    k = key(0) if k is None else k
    return T.BaseTransformer(cfg, vocab_size=VOCAB, seq_len=SEQ, text_width=TEXT_W, key=k)


def reconfigure(model, **changes):
    """``model``'s weights under a config differing only in static fields (dtype, dropout, ...)."""
    abstract = eqx.filter_eval_shape(make, dataclasses.replace(CFG, **changes))
    return jax.tree.unflatten(jax.tree.structure(abstract), jax.tree.leaves(model))


@pytest.fixture(scope="module")
def model():
    return eqx.filter_jit(make)()


@pytest.fixture(scope="module")
def example():
    k1, k2 = jax.random.split(key(1))
    tokens = jax.random.randint(k1, (SEQ,), 0, VOCAB + 1)  # includes [MASK] = VOCAB
    text = jax.random.normal(k2, (L, TEXT_W))
    text_mask = jnp.array([True, True, True, False, False])
    return tokens, text, text_mask


call = eqx.filter_jit(lambda m, t, x, mask: m(t, x, mask))


def test_output_shape_dtype_and_mask_id(model, example):
    logits = call(model, *example)
    assert logits.shape == (SEQ, VOCAB) and logits.dtype == jnp.float32
    assert model.mask_id == VOCAB and model.vocab_size == VOCAB and model.seq_len == SEQ
    assert model.decoder.token_embed.weight.shape == (VOCAB + 1, CFG.width)  # + [MASK]
    assert model.decoder.head.out.weight.shape == (CFG.width, VOCAB)  # codebook only
    assert model.decoder.pos_embed.table.shape == (SEQ, CFG.width)


def test_default_keys_trace():
    abstract = eqx.filter_eval_shape(make, CFG, jax.random.key(0))
    args = (jnp.zeros(SEQ, jnp.int32), jnp.zeros((L, TEXT_W)), jnp.ones(L, bool))
    out = eqx.filter_eval_shape(lambda m: m(*args, key=jax.random.key(1)), abstract)
    assert out.shape == (SEQ, VOCAB)


def test_batched_call_matches_vmap_and_rejects_mixed_batching(model, example):
    tokens, text, text_mask = example
    batch = [jnp.stack([x, x[::-1]]) for x in example]  # two different examples
    np.testing.assert_allclose(model(*batch), jax.vmap(model)(*batch), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="same batch"):
        jax.eval_shape(lambda: model(tokens[None], text, text_mask))
    with pytest.raises(ValueError, match="one example"):
        jax.eval_shape(lambda: model(tokens[None, None], text[None, None], text_mask[None, None]))
    with pytest.raises(ValueError, match="text"):
        jax.eval_shape(lambda: model(tokens, text[:, :4], text_mask))


def test_logits_ignore_padded_text_positions(model, example):
    tokens, text, text_mask = example
    changed = jnp.where(text_mask[:, None], text, 100.0 * jax.random.normal(key(9), text.shape))
    logits = call(model, tokens, text, text_mask)
    np.testing.assert_array_equal(logits, call(model, tokens, changed, text_mask))
    # ... while the kept positions do matter.
    assert not np.array_equal(logits, call(model, tokens, text * 2, text_mask))


def test_dropped_text_is_exactly_no_cross_attention(model, example):
    tokens, text, _ = example
    dropped = jnp.zeros((L,), bool)
    blocks = lambda m: m.decoder.blocks.blocks
    no_cross = eqx.tree_at(lambda m: (blocks(m).cross_attn, blocks(m).cross_norm), model, (None, None))
    logits = call(model, tokens, text, dropped)
    assert np.isfinite(np.asarray(logits)).all()
    np.testing.assert_allclose(logits, call(no_cross, tokens, text, dropped), rtol=0, atol=1e-6)
    # Gradient finiteness with dropped text is checked in the training-step test.


def test_attention_goes_through_dot_product_attention(model, example, monkeypatch):
    calls = []
    original = jax.nn.dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs.get("mask") is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    jax.eval_shape(lambda: model(*example))
    assert calls == [False, True]  # self-attention, then masked cross-attention (scan traces once)


def test_attention_kernel_is_passed_through_and_checked(model, example, monkeypatch):
    kernels = []
    original = jax.nn.dot_product_attention

    def spy(*args, **kwargs):
        kernels.append(kwargs.get("implementation"))
        return original(*args, **{**kwargs, "implementation": None})

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    jax.eval_shape(lambda: model(*example))
    assert kernels == ["xla", "xla"]
    # the cuDNN kernel reaches the self-attention; the masked cross-attention stays on XLA (faked: no GPU)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    cudnn = reconfigure(model, attention="cudnn", dtype="bfloat16")
    kernels.clear()
    jax.eval_shape(lambda: cudnn(*example))
    assert kernels == ["cudnn", "xla"]
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"TransformerConfig.attention: expected one of \('xla', 'cudnn'\)"):
        dataclasses.replace(CFG, attention="flash")
    with pytest.raises(ValueError, match=r"attention='cudnn': needs an NVIDIA GPU backend \(this one is 'cpu'\)"):
        make(dataclasses.replace(CFG, attention="cudnn", dtype="bfloat16"))


class _Recording:
    """Layout hints that record what the layers pass them and change nothing."""

    def __init__(self):
        self.seen = []

    def layer(self, block_params, x):
        self.seen.append(("layer", x.shape))
        return block_params, x

    def gathered(self, weight):
        self.seen.append(("gathered", weight.shape))
        return weight


def test_layout_hints_reach_the_layers_only_through_with_layout(model, example):
    assert model.decoder.blocks.layout is None and model.decoder.token_embed.layout is None
    hints = _Recording()
    jax.eval_shape(lambda: model(*example))
    assert hints.seen == []
    laid_out = with_layout(model, hints)
    assert np.array_equal(call(laid_out, *example), call(model, *example))
    assert hints.seen == [("gathered", (VOCAB + 1, CFG.width)), ("layer", (SEQ, CFG.width))]  # scan traces once
    stripped = with_layout(laid_out, None)
    assert jax.tree.structure(stripped) == jax.tree.structure(model)  # what a checkpoint skeleton expects


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
    axes = layers.logical_axes(model)
    arrays = jax.tree.leaves(model)
    names = jax.tree.leaves(axes, is_leaf=layers.is_axes)
    assert len(arrays) == len(names) and len(arrays) > 0
    for array, axis_names in zip(arrays, names):
        assert len(axis_names) == array.ndim
        assert set(axis_names) <= AXIS_NAMES
        assert len(set(axis_names)) == len(axis_names), axis_names  # shardable: no repeats
    stacked = jax.tree.leaves(layers.logical_axes(model.decoder.blocks), is_leaf=layers.is_axes)
    assert all(n[0] == "layers" for n in stacked)
    assert axes.decoder.token_embed.weight == ("vocab", "embed")
    assert axes.text_proj.weight == ("text_embed", "embed")
    assert axes.decoder.blocks.blocks.self_attn.q_proj == ("layers", "embed", "heads", "kv")
    # "mlp" is the axis a rules table shards as the MLP's hidden width: only MLP weights carry it.
    with_mlp = [path for path, names in jax.tree_util.tree_flatten_with_path(axes, is_leaf=layers.is_axes)[0]
                if "mlp" in names]
    assert with_mlp and all(".mlp." in jax.tree_util.keystr(path) for path in with_mlp), with_mlp
    assert axes.decoder.head.dense.weight == ("embed", "embed_out")


def test_logical_axes_on_abstract_model():
    cfg = get_preset("toy")
    shapes = eqx.filter_eval_shape(
        T.BaseTransformer, cfg.base, vocab_size=cfg.tokenizer.codebook_size,
        seq_len=cfg.tokenizer.grid**2, text_width=cfg.text.width, key=jax.random.key(0),
    )
    names = jax.tree.leaves(layers.logical_axes(shapes), is_leaf=layers.is_axes)
    assert [len(n) for n in names] == [len(x.shape) for x in jax.tree.leaves(shapes)]


def test_bfloat16_compute_keeps_float32_params(model, example):
    model = reconfigure(model, dtype="bfloat16")
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(model))
    logits = call(model, *example)
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
    assert np.abs(logits - call(reconfigure(model, dtype="float32"), *example)).max() < 0.1
    jaxpr = str(jax.make_jaxpr(lambda: model(*example))())
    assert "bf16" in jaxpr  # activations really run in bfloat16
    grads = eqx.filter_eval_shape(eqx.filter_grad(lambda m: m(*example).sum()), model)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="dtype"):
        eqx.filter_eval_shape(make, dataclasses.replace(CFG, dtype="float8"))


def test_dropout_uses_the_key(model, example):
    noisy_model = reconfigure(model, dropout=0.3)
    with_key = eqx.filter_jit(lambda m, k: m(*example, key=k))
    a, b = with_key(noisy_model, key(3)), with_key(noisy_model, key(4))
    assert not np.allclose(a, b)
    assert np.abs(a - call(model, *example)).max() < 10.0  # perturbed, not broken
    # Without a key there is no dropout: the same computation as the dropout-free model.
    trace = lambda m: str(jax.make_jaxpr(lambda: m(*example))())
    assert trace(noisy_model) == trace(model)


def test_remat_rematerialises_each_layer(model, example):
    remat = reconfigure(model, remat=True)
    assert remat.decoder.blocks.remat and not model.decoder.blocks.remat
    grad_jaxpr = str(jax.make_jaxpr(lambda m: eqx.filter_grad(lambda m: m(*example).sum())(m))(remat))
    assert "remat" in grad_jaxpr or "checkpoint" in grad_jaxpr


# --------------------------------------------------------------------------
# Loss


def test_masked_cross_entropy_ignores_unmasked_positions():
    logits = jax.random.normal(key(0), (2, 6, 5))
    targets = jnp.array([[0, 1, 2, 3, 4, 0], [1, 1, 1, 1, 1, 1]])
    mask = jnp.array([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]], bool)
    ce = jax.jit(losses.masked_cross_entropy)
    loss, acc = ce(logits, targets, mask)
    changed = jnp.where(mask[..., None], logits, 50.0 * jax.random.normal(key(1), logits.shape))
    np.testing.assert_allclose(ce(changed, targets, mask), (loss, acc), rtol=1e-6)
    logp = np.asarray(jax.nn.log_softmax(logits))
    nll = -np.array([logp[0, 0, 0], logp[0, 2, 2], logp[1, 5, 1]])
    np.testing.assert_allclose(loss, nll.mean(), rtol=1e-5)  # mean over the batch's masked tokens


def _batch(batch=8):
    k1, k2 = jax.random.split(key(7))
    tokens = jax.random.randint(k1, (batch, SEQ), 0, VOCAB)
    text = jax.random.normal(k2, (batch, L, TEXT_W))
    text_mask = jnp.broadcast_to(jnp.arange(L) < 3, (batch, L))
    return tokens, text, text_mask


def test_loss_scores_only_masked_positions():
    tokens, _, text_mask = _batch()
    logits = jax.random.normal(key(2), (*tokens.shape, VOCAB))
    noise = jax.random.normal(key(5), logits.shape)

    @jax.jit
    def loss(perturb):
        def predict(inputs, text_mask, k):
            unmasked = (inputs != VOCAB)[..., None]  # positions the model sees unmasked
            return logits + perturb * unmasked * noise

        return losses.masked_prediction_loss(predict, tokens, text_mask, key(1), mask_id=VOCAB, cond_drop=0.1)

    (clean, metrics), (perturbed, _) = loss(0.0), loss(30.0)
    np.testing.assert_allclose(clean, perturbed, rtol=1e-6)
    assert 0.0 < float(metrics["mask_rate"]) <= 1.0


OPTIMIZER = optax.adam(1e-2)


@eqx.filter_jit
def train_step(model, opt_state, tokens, text, text_mask, cond_drop):
    """One Adam step; returns the new state and the loss/metrics *before* the step."""
    (loss, metrics), grads = eqx.filter_value_and_grad(losses.masked_token_loss, has_aux=True)(
        model, tokens, text, text_mask, key(0), cond_drop=cond_drop
    )
    updates, opt_state = OPTIMIZER.update(grads, opt_state, model)
    metrics["grads_finite"] = jnp.all(jnp.array([jnp.isfinite(g).all() for g in jax.tree.leaves(grads)]))
    return eqx.apply_updates(model, updates), opt_state, loss, metrics


def test_loss_metrics_and_conditioning_dropout(model):
    tokens, text, text_mask = _batch(16)
    opt_state = OPTIMIZER.init(eqx.filter(model, eqx.is_array))

    def loss(text_mask, cond_drop):  # traced cond_drop: one compilation for every call
        return train_step(model, opt_state, tokens, text, text_mask, jnp.float32(cond_drop))[2:]

    value, metrics = loss(text_mask, 0.0)
    assert set(metrics) == {"loss", "accuracy", "mask_rate", "text_dropped", "grads_finite"}
    assert np.isfinite(float(value)) and float(metrics["text_dropped"]) == 0.0
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0 and 0.0 < float(metrics["mask_rate"]) <= 1.0
    # cond_drop = 1 removes every example's text: identical to passing no text at all.
    dropped, m1 = loss(text_mask, 1.0)
    no_text, _ = loss(jnp.zeros_like(text_mask), 0.0)
    assert float(m1["text_dropped"]) == 1.0 and bool(m1["grads_finite"])
    np.testing.assert_allclose(dropped, no_text, rtol=1e-6)
    assert float(dropped) != pytest.approx(float(value), rel=1e-6)


def test_a_few_adam_steps_reduce_the_loss(model):
    tokens, text, text_mask = _batch(16)
    opt_state = OPTIMIZER.init(eqx.filter(model, eqx.is_array))
    losses = []
    for _ in range(12):
        # A fixed key inside train_step: the same masks and text drops every
        # step, so the objective is fixed.
        model, opt_state, loss, metrics = train_step(
            model, opt_state, tokens, text, text_mask, jnp.float32(0.25)
        )
        losses.append(float(loss))
        assert bool(metrics["grads_finite"])  # also for the examples whose text was dropped
    assert float(metrics["text_dropped"]) > 0
    assert losses[-1] < 0.9 * losses[0], losses  # observed: 2.80 -> 2.25


# --------------------------------------------------------------------------
# Sizes (counted abstractly: nothing is allocated)


def abstract_base(preset):
    cfg = get_preset(preset)
    return eqx.filter_eval_shape(
        T.BaseTransformer, cfg.base, vocab_size=cfg.tokenizer.codebook_size,
        seq_len=cfg.tokenizer.grid**2, text_width=cfg.text.width, key=jax.random.key(0),
    )


def test_count_params_real_equals_abstract(model):
    abstract = eqx.filter_eval_shape(make)
    assert layers.count_params(model) == layers.count_params(abstract) == sum(x.size for x in jax.tree.leaves(model))


def test_cc3m_base_is_632m():
    n = layers.count_params(abstract_base("cc3m"))
    assert abs(n / 632e6 - 1) < 0.05, n


def test_paper_base_is_3b_and_table4_shaped():
    start = time.perf_counter()
    shapes = abstract_base("paper-3b")
    n = layers.count_params(shapes)
    assert time.perf_counter() - start < 30
    assert abs(n / 3e9 - 1) < 0.10, n
    blocks = shapes.decoder.blocks.blocks
    assert blocks.mlp.fc1.weight.shape == (48, 2048, 8192)  # Table 4: 48 layers, 2048 wide, MLP 8192
    assert blocks.cross_attn.q_proj.shape == (48, 2048, 32, 64)
    assert shapes.decoder.token_embed.weight.shape == (8193, 2048)
    assert shapes.text_proj.weight.shape == (4096, 2048)  # T5-XXL


def test_sincos_positions_match_a_direct_formula():
    grid, width = 3, 8
    table = np.asarray(layers.sincos_2d(grid, width))
    # Two frequencies per axis: 1 and 1/10000**(1/2) = 0.01 rad per unit, 16/3 units per cell.
    freqs = np.array([1.0, 0.01])
    for r in range(grid):
        for c in range(grid):
            y, x = r * 16 / grid, c * 16 / grid
            expected = np.concatenate([np.sin(y * freqs), np.cos(y * freqs), np.sin(x * freqs), np.cos(x * freqs)])
            np.testing.assert_allclose(table[r * grid + c], expected, rtol=1e-5, atol=1e-6)


def test_sincos_init_is_learned_small_and_spatially_smooth():
    cfg = dataclasses.replace(get_preset("toy").base, pos_init="sincos")
    model = T.MaskedTokenTransformer(cfg, vocab_size=16, seq_len=64, key=jax.random.PRNGKey(0))
    table = model.pos_embed.table
    assert eqx.is_inexact_array(table)  # a parameter, trained like the rest
    np.testing.assert_allclose(float(jnp.sqrt(jnp.mean(table ** 2))), 0.02, rtol=1e-5)
    grid = table.reshape(8, 8, -1)
    near = float(jnp.linalg.norm(grid[3, 3] - grid[3, 4]))
    far = float(jnp.linalg.norm(grid[3, 3] - grid[3, 7]))
    assert near < far


def test_sincos_positions_need_a_square_grid():
    with pytest.raises(ValueError, match="square token grid"):
        layers.LearnedPositions(12, 8, key=jax.random.PRNGKey(0), init="sincos")
