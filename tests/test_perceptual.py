"""LPIPS-style VGG16 distance vs a PyTorch reference on seeded random weights."""

import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file
from script_module import load_script

from muse_mini.models.perceptual import TAP_CHANNELS, conv_indices, load_lpips, load_state_dict

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "perceptual" / "reference.npz"


def _fixture_module():
    return load_script("make_perceptual_fixture")


@pytest.fixture(scope="module")
def reference():
    ref = np.load(FIXTURE)
    tensors = _fixture_module().random_vgg16_weights(int(ref["seed"]))
    return ref, tensors


def _nhwc(x_NCHW):
    return jnp.asarray(np.transpose(x_NCHW, (0, 2, 3, 1)))


def test_conv_indices_match_torchvision_layout():
    assert conv_indices() == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


@eqx.filter_jit
def _taps_and_distance(lpips, a_NxHxWx3, b_NxHxWx3):
    # One compiled function for every check here: eager VGG16 is slow on CPU.
    return jax.vmap(lpips.features)(a_NxHxWx3), jax.vmap(lpips)(a_NxHxWx3, b_NxHxWx3)


def test_parity_with_torch_reference(reference):
    ref, tensors = reference
    lpips = load_state_dict(tensors)
    uniform = eqx.tree_at(lambda m: m.lin, lpips, [jnp.full((c,), 1.0 / c) for c in TAP_CHANNELS])
    a, b = _nhwc(ref["a"]), _nhwc(ref["b"])

    taps, got_uniform = _taps_and_distance(uniform, a, b)
    for k, tap in enumerate(taps):
        want = ref[f"features_a_{k}"]
        got = np.asarray(tap[:, : want.shape[1]])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(got_uniform, ref["distance_uniform"], rtol=1e-4)
    np.testing.assert_allclose(_taps_and_distance(lpips, a, b)[1], ref["distance_lin"], rtol=1e-4)
    # A distance to itself is zero; to a different image it is not.
    np.testing.assert_allclose(_taps_and_distance(lpips, a, a)[1], 0.0, atol=1e-12)
    assert np.all(np.asarray(got_uniform) > 0)


def test_load_from_safetensors_file(tmp_path, reference):
    _, tensors = reference
    path = tmp_path / "vgg.safetensors"
    save_file({k: v for k, v in tensors.items() if k.startswith("features.")}, str(path))
    lpips = load_lpips(str(path))
    np.testing.assert_array_equal(lpips.vgg.convs[-1].bias.reshape(-1), tensors["features.28.bias"])
    for lin, c in zip(lpips.lin, TAP_CHANNELS):  # no lin file: uniform channel mean
        np.testing.assert_allclose(lin, 1.0 / c)


def test_missing_weights_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="perceptual weights"):
        load_lpips(str(tmp_path / "nope.safetensors"))
    with pytest.raises(KeyError, match="features.0.weight"):
        load_state_dict({})
