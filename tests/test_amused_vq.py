"""aMUSEd's VQ tokenizer in JAX: parity with diffusers' VQModel, loading, and its one-line errors.

Reference outputs come from scripts/make_amused_fixtures.py (torch + diffusers 0.33.1, in a
separate venv): ``vq_latents`` and ``vq_indices`` from encode + quantize, ``vq_decoded`` the
decoder's raw output for those indices (the pipelines clip it to [0, 1]).
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
from safetensors import safe_open
from safetensors.numpy import save_file

from muse_mini.models.amused.vq import load_amused_vq, vq_from_config

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "amused"
LAYOUTS = ["tiny-256", "tiny-512"]
WEIGHTS = "diffusion_pytorch_model.safetensors"
TOL = 1e-4


@eqx.filter_jit
def _encode(vq, images):
    return jax.vmap(vq.encode)(images)


@eqx.filter_jit
def _decode(vq, indices, clip=True):
    return jax.vmap(lambda i: vq.decode(i, clip=clip))(indices)


@cache
def reference(layout: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{layout}.npz") as f:
        return {k: f[k] for k in f.files if k.startswith("vq_")}


def tampered(tmp_path, edit, name=WEIGHTS) -> Path:
    """A copy of tiny-256's vqvae/ whose tensors went through ``edit(dict)``, saved as ``name``."""
    folder = tmp_path / "vqvae"
    folder.mkdir()
    shutil.copy(FIXTURES / "tiny-256" / "vqvae" / "config.json", folder)
    with safe_open(FIXTURES / "tiny-256" / "vqvae" / WEIGHTS, framework="numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(edit(tensors), str(folder / name))
    return folder


@eqx.filter_jit
def _all_outputs(vq, images, indices):
    """Latents, indices, raw and clipped pixels in one compiled call (one compile per layout)."""
    latents = jax.vmap(lambda x: vq.quant_conv(vq.encoder(x)))(images)
    return latents, jax.vmap(vq.encode)(images), _decode(vq, indices, clip=False), _decode(vq, indices)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_with_diffusers(layout):
    ref, vq = reference(layout), load_amused_vq(FIXTURES / layout / "vqvae")
    outputs = _all_outputs(vq, jnp.asarray(ref["vq_images"]), jnp.asarray(ref["vq_indices"]))
    latents, indices, raw, clipped = map(np.asarray, outputs)
    np.testing.assert_array_equal(indices, ref["vq_indices"])
    expected = {"vq_latents": latents, "vq_decoded": raw}
    for name, ours in expected.items():
        assert ours.shape == ref[name].shape and np.abs(ours - ref[name]).max() <= TOL, name
    assert np.abs(clipped - np.clip(ref["vq_decoded"], 0, 1)).max() <= TOL  # what the pipelines keep


def test_fp16_file_loads_cast_to_the_dtype_asked(tmp_path):
    folder = tampered(tmp_path, lambda t: {k: v.astype(np.float16) for k, v in t.items()},
                      name="diffusion_pytorch_model.fp16.safetensors")
    ref = reference("tiny-256")
    vq = load_amused_vq(folder)
    assert vq.quant_conv.weight.dtype == jnp.float32
    raw = np.asarray(_decode(vq, jnp.asarray(ref["vq_indices"]), clip=False))
    assert np.abs(raw - ref["vq_decoded"]).max() < 0.05
    assert load_amused_vq(folder, dtype=jnp.bfloat16).decoder.conv_out.weight.dtype == jnp.bfloat16


def _one_line_error(folder) -> str:
    with pytest.raises(ValueError) as err:
        load_amused_vq(folder)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unknown_and_missing_names_are_refused_in_one_line(tmp_path):
    def edit(t):
        t["encoder.extra.weight"] = np.zeros(3, np.float32)
        del t["decoder.conv_out.bias"]
        return t

    message = _one_line_error(tampered(tmp_path, edit))
    assert message == "vqvae: unknown weights ['encoder.extra.weight'], missing weights ['decoder.conv_out.bias']"


def test_wrong_shapes_are_refused_in_one_line(tmp_path):
    shapes = {}

    def edit(t):
        shapes["right"] = t["quantize.embedding.weight"].shape
        t["quantize.embedding.weight"] = t["quantize.embedding.weight"][:-1]
        shapes["wrong"] = t["quantize.embedding.weight"].shape
        return t

    message = _one_line_error(tampered(tmp_path, edit))
    assert message == f"vqvae: wrong shapes quantize.embedding.weight {shapes['wrong']} (expected {shapes['right']})"


def test_wrong_folder_names_it_and_what_was_expected(tmp_path):
    (tmp_path / WEIGHTS).write_bytes(b"")
    message = _one_line_error(tmp_path)
    assert str(tmp_path) in message and "config.json" in message and WEIGHTS in message
    assert str(tmp_path / "nowhere") in _one_line_error(tmp_path / "nowhere")


TINY = {"block_out_channels": [8, 16, 16, 16], "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 1, "latent_channels": 6,
        "num_vq_embeddings": 30, "norm_num_groups": 4, "mid_block_add_attention": False}


def test_random_init_shapes_and_bad_input():
    vq = vq_from_config(TINY, key=jax.random.key(0))
    assert vq.factor == 8 and vq.codebook_size == 30
    indices = _encode(vq, jax.random.uniform(jax.random.key(1), (2, 3, 32, 24)))
    assert indices.shape == (2, 4, 3) and indices.dtype == jnp.int32
    images = _decode(vq, indices)
    assert images.shape == (2, 3, 32, 24) and float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    with pytest.raises(ValueError, match=r"image_3xHxW: expected shape \(3, H, W\) with H, W multiples of 8"):
        vq.encode(jnp.zeros((3, 30, 32)))
    with pytest.raises(ValueError, match="indices_hxw: expected an integer"):
        vq.decode(jnp.zeros((4, 4)))


@pytest.mark.parametrize("change", [{"norm_type": "spatial"}, {"mid_block_add_attention": True},
                                    {"down_block_types": ["AttnDownEncoderBlock2D"] * 4}])
def test_unsupported_configs_are_refused(change):
    with pytest.raises(ValueError, match="config: only aMUSEd's VQModel layout is supported"):
        vq_from_config({**TINY, **change}, key=jax.random.key(0))


def test_config_json_round_trip_matches_the_fixture():
    config = json.loads((FIXTURES / "tiny-256" / "vqvae" / "config.json").read_text())
    vq = load_amused_vq(FIXTURES / "tiny-256" / "vqvae")
    assert vq.codebook_size == config["num_vq_embeddings"]
    assert vq.factor == 2 ** (len(config["block_out_channels"]) - 1)
