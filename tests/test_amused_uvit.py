"""aMUSEd's U-ViT in JAX: logit parity with diffusers' ``UVit2DModel``, the loader's errors, the sampler interface.

References come from scripts/make_amused_fixtures.py (torch + diffusers 0.33.1, in a separate venv):
tiny-256 has no down/upsampling, tiny-512 has both; every norm and GRN parameter is random.
"""

import json
import shutil
from functools import cache
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from muse_mini.models.amused.layers import torch_names
from muse_mini.models.amused.uvit import _RENAME, _STACKED, load_uvit, uvit_from_config

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "amused"
LAYOUTS = ["tiny-256", "tiny-512"]
TOL = 1e-4


@cache
def model(layout: str):
    return load_uvit(FIXTURES / layout / "transformer")


def reference(layout: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{layout}.npz") as f:
        return {k: f[k] for k in f if k.startswith("uvit_")}


@eqx.filter_jit
def batch_logits(m, ids_BxN, text_BxTxE, pooled_BxP, micro_Bx5):
    cond = jax.vmap(m.encode_condition)(text_BxTxE, pooled_BxP, micro_Bx5)
    return jax.vmap(m.logits)(ids_BxN, cond)


def token_major(logits_BxVxHxW):
    """diffusers' ``(B, V, h, w)`` as muse_mini's ``(B, N, V)``, N row-major over the grid."""
    B, V = logits_BxVxHxW.shape[:2]
    return logits_BxVxHxW.reshape(B, V, -1).transpose(0, 2, 1)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_logits_match_diffusers(layout):
    ref, m = reference(layout), model(layout)
    B, h, w = ref["uvit_input_ids"].shape
    assert m.grid == (h, w) and m.seq_len == h * w
    got = batch_logits(m, ref["uvit_input_ids"].reshape(B, -1), ref["uvit_encoder_hidden_states"],
                       ref["uvit_pooled_text_emb"], ref["uvit_micro_conds"])
    assert got.shape == (B, h * w, m.vocab_size)
    err = float(np.abs(np.asarray(got) - token_major(ref["uvit_logits"])).max())
    assert err <= TOL, f"{layout}: max abs error {err:.2e}"


def test_call_takes_the_grid_and_matches_logits():
    ref, m = reference("tiny-256"), model("tiny-256")
    args = (ref["uvit_encoder_hidden_states"][0], ref["uvit_pooled_text_emb"][0], ref["uvit_micro_conds"][0])
    got = eqx.filter_jit(m)(ref["uvit_input_ids"][0], *args)
    assert np.abs(np.asarray(got) - token_major(ref["uvit_logits"][:1])[0]).max() <= TOL


def test_sampler_interface_matches_the_scheduler():
    m = model("tiny-256")
    scheduler = json.loads((FIXTURES / "tiny-256" / "scheduler" / "scheduler_config.json").read_text())
    assert m.mask_id == scheduler["mask_token_id"]
    assert load_uvit(FIXTURES / "tiny-256" / "transformer", mask_id=7).mask_id == 7


def test_random_model_has_the_checkpoint_names_and_shapes():
    folder = FIXTURES / "tiny-512" / "transformer"
    config = json.loads((folder / "config.json").read_text())
    m = uvit_from_config(config, key=jax.random.key(0))
    tensors = load_file(folder / "diffusion_pytorch_model.safetensors")
    leaves = jax.tree.leaves(m)
    names = torch_names(m, stacked=_STACKED, rename=_RENAME)
    assert set(names) == set(tensors)
    for name, (index, layer) in names.items():
        shape = leaves[index].shape[layer is not None:]
        assert shape == tensors[name].shape, name
    norm = m.transformer_layers.norm1.norm.weight
    assert float(jnp.abs(norm - 1).max()) == 0.0 and float(jnp.std(m.embed.embeddings.weight)) > 0.01


def _tampered(tmp_path, edit, name="diffusion_pytorch_model.safetensors"):
    src = FIXTURES / "tiny-256" / "transformer"
    dst = tmp_path / "transformer"
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    tensors = load_file(src / "diffusion_pytorch_model.safetensors")
    save_file(edit(tensors), dst / name)
    return dst


def _one_line_error(folder, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        load_uvit(folder, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_unknown_and_missing_names_are_refused_in_one_line(tmp_path):
    def rename(t):
        t["foo.bar"] = t.pop("mlm_layer.conv2.weight")
        return t

    message = _one_line_error(_tampered(tmp_path, rename))
    assert message == "transformer: unknown weights ['foo.bar'], missing weights ['mlm_layer.conv2.weight']"


def test_wrong_shapes_are_refused_in_one_line(tmp_path):
    def widen(t):
        t["transformer_layers.1.ff.net.2.weight"] = np.zeros((3, 3), np.float32)
        return t

    message = _one_line_error(_tampered(tmp_path, widen))
    assert message.startswith("transformer: wrong shapes transformer_layers.1.ff.net.2.weight (3, 3)")


def test_wrong_folder_is_named(tmp_path):
    message = _one_line_error(tmp_path)
    assert str(tmp_path) in message and "config.json" in message and "diffusion_pytorch_model.safetensors" in message


def test_fp16_variant_loads_in_the_dtype_asked(tmp_path):
    def half(t):
        return {k: v.astype(np.float16) for k, v in t.items()}

    folder = _tampered(tmp_path, half, name="diffusion_pytorch_model.fp16.safetensors")
    m32, m16 = load_uvit(folder), load_uvit(folder, jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(m32)} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(m16)} == {jnp.dtype(jnp.bfloat16)}
    ref = model("tiny-256").mlm_layer.conv2.weight
    assert np.array_equal(m32.mlm_layer.conv2.weight, np.asarray(ref).astype(np.float16).astype(np.float32))


def test_bad_inputs_are_named():
    m = model("tiny-256")
    ref = reference("tiny-256")
    text, pooled = ref["uvit_encoder_hidden_states"][0], ref["uvit_pooled_text_emb"][0]
    micro = ref["uvit_micro_conds"][0]
    with pytest.raises(ValueError, match="text_TxE"):
        m.encode_condition(text[:, :5], pooled, micro)
    with pytest.raises(ValueError, match="micro_conds_M"):
        m.encode_condition(text, pooled, micro[:4])
    with pytest.raises(ValueError, match="tokens"):
        m.logits(jnp.zeros((7,), jnp.int32), m.encode_condition(text, pooled, micro))
    with pytest.raises(ValueError, match="even"):
        model("tiny-512").logits(jnp.zeros((5, 6), jnp.int32), None)
