"""LPIPS-style perceptual loss on VGG16 features (Muse §A.2, Table 5: weight 0.05).

Both images go through VGG16's conv stack; at five taps (relu1_2 … relu5_3) each
position's channel vector is unit-normalised, the squared difference weighted per
channel and averaged over space (LPIPS, Zhang et al. 2018). It needs pretrained
ImageNet weights, from a local safetensors file or, online, a hub name; nothing is
downloaded implicitly, which is why the offline ``toy`` preset sets ``perceptual="none"``.
"""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from muse_mini.hub import HUB_PROBE_TIMEOUT_S, hub_offline

# VGG16 `features` up to relu5_3: conv widths, "M" = 2×2 max-pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in torchvision's `features` Sequential of the five tapped ReLUs.
TAP_INDICES = (3, 8, 15, 22, 29)
TAP_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS's input scaling: inputs in [-1, 1] are mapped to ImageNet statistics.
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


def conv_indices() -> list[int]:
    """Index of each conv layer in torchvision's ``vgg16().features`` (0, 2, 5, ...)."""
    indices, i = [], 0
    for item in VGG16_LAYOUT:
        if item == "M":
            i += 1
        else:
            indices.append(i)
            i += 2  # conv, relu
    return indices


class VGG16Features(eqx.Module):
    """The 13 conv layers of VGG16; returns the five LPIPS taps for one ``3xHxW`` image."""

    convs: list[eqx.nn.Conv2d]

    def __init__(self, *, key: jax.Array):
        keys = iter(jax.random.split(key, 13))
        self.convs, cin = [], 3
        for item in VGG16_LAYOUT:
            if item != "M":
                self.convs.append(eqx.nn.Conv2d(cin, item, 3, padding=1, key=next(keys)))
                cin = item

    def __call__(self, x_3xHxW: Array) -> list[Array]:
        taps, h, conv_i = [], x_3xHxW, 0
        for pos, item in enumerate(VGG16_LAYOUT):
            if item == "M":
                taps.append(h)  # the ReLU just before each pool is a tap
                c, hh, ww = h.shape
                h = h[:, : hh // 2 * 2, : ww // 2 * 2].reshape(c, hh // 2, 2, ww // 2, 2).max(axis=(2, 4))
            else:
                h = jax.nn.relu(self.convs[conv_i](h))
                conv_i += 1
        taps.append(h)
        return taps


def _unit_normalize(f_CxHxW: Array, eps: float = 1e-10) -> Array:
    return f_CxHxW / (jnp.sqrt(jnp.sum(f_CxHxW**2, axis=0, keepdims=True)) + eps)


class LPIPS(eqx.Module):
    """LPIPS-style distance between two ``HxWx3`` images in ``[-1, 1]``; frozen, ``lin`` weights default to a channel mean."""

    vgg: VGG16Features
    lin: list[Float[Array, " C"]]

    def __init__(self, *, key: jax.Array):
        self.vgg = VGG16Features(key=key)
        self.lin = [jnp.full((c,), 1.0 / c) for c in TAP_CHANNELS]

    def features(self, img_HxWx3: Array) -> list[Array]:
        x_3xHxW = jnp.transpose((img_HxWx3 - _SHIFT) / _SCALE, (2, 0, 1))
        return self.vgg(x_3xHxW)

    def __call__(self, a_HxWx3: Array, b_HxWx3: Array) -> Float[Array, ""]:
        total = 0.0
        for i, (fa, fb) in enumerate(zip(self.features(a_HxWx3), self.features(b_HxWx3))):
            d_CxHxW = (_unit_normalize(fa) - _unit_normalize(fb)) ** 2
            total = total + jnp.mean(jnp.tensordot(self.lin[i], d_CxHxW, 1))
        return total


# --------------------------------------------------------------------------
# Loading weights


def load_state_dict(tensors: dict[str, np.ndarray]) -> LPIPS:
    """An :class:`LPIPS` from torchvision/timm-named VGG16 tensors, plus LPIPS "lin" weights when all five are present."""
    tensors = {k.removeprefix("vgg.").removeprefix("net."): v for k, v in tensors.items()}
    # Built abstractly: a random init of 14.7M parameters takes tens of seconds on a CPU.
    lpips = eqx.filter_eval_shape(LPIPS, key=jax.random.key(0))

    def take(name, like):
        if name not in tensors:
            raise KeyError(f"VGG16 weights: missing tensor {name!r}")
        return jnp.asarray(np.asarray(tensors[name], np.float32).reshape(like.shape))

    weights = [take(f"features.{i}.weight", c.weight) for i, c in zip(conv_indices(), lpips.vgg.convs)]
    biases = [take(f"features.{i}.bias", c.bias) for i, c in zip(conv_indices(), lpips.vgg.convs)]
    if all(f"lin{k}.model.1.weight" in tensors for k in range(5)):
        lin = [take(f"lin{k}.model.1.weight", w) for k, w in enumerate(lpips.lin)]
    else:
        lin = [jnp.full((c,), 1.0 / c) for c in TAP_CHANNELS]
    lpips = eqx.tree_at(lambda m: [c.weight for c in m.vgg.convs], lpips, weights)
    lpips = eqx.tree_at(lambda m: [c.bias for c in m.vgg.convs], lpips, biases)
    return eqx.tree_at(lambda m: m.lin, lpips, lin)


PAPER_WEIGHTS = ("timm/vgg16.tv_in1k", "model.safetensors")  # the default of VQGANConfig.perceptual_weights


def _is_hub_name(source: str) -> bool:
    return "/" in source and not source.endswith((".safetensors", ".npz")) and not os.path.isabs(source)


def _weights_missing(source: str, why: str) -> FileNotFoundError:
    repo = source if _is_hub_name(source) else PAPER_WEIGHTS[0]
    file = PAPER_WEIGHTS[1]
    return FileNotFoundError(
        f"tokenizer.perceptual_weights: cannot get the perceptual weights (VGG16) from {source!r} "
        f"({why}); it needs {file} of the hub repository {repo}: on a machine with network run "
        f"`hf download {repo} {file}` (older huggingface_hub: `huggingface-cli download {repo} {file}`, "
        f"or huggingface_hub.hf_hub_download({repo!r}, {file!r})), then set "
        f"tokenizer.perceptual_weights=/path/to/{file}; or set tokenizer.perceptual=none to train without it")


def _download(repo: str) -> str:
    """``model.safetensors`` of ``repo`` from the cache, else the hub, failing in seconds (never when offline)."""
    from huggingface_hub import HfApi, constants, hf_hub_download

    file = PAPER_WEIGHTS[1]
    try:
        return hf_hub_download(repo, file, local_files_only=True)
    except Exception:  # not cached (or a broken cache entry): the hub has to serve it
        pass
    if hub_offline(read_at_import=bool(constants.HF_HUB_OFFLINE)):
        raise _weights_missing(repo, "HF_HUB_OFFLINE is set and they are not in the hub cache") from None
    try:
        HfApi().model_info(repo, timeout=HUB_PROBE_TIMEOUT_S)
        return hf_hub_download(repo, file)
    except Exception as e:  # no network, no such repository or file, HTTP error
        raise _weights_missing(repo, f"the hub answered {type(e).__name__}") from None


def load_lpips(source: str, *, lin_path: str | None = None) -> LPIPS:
    """An :class:`LPIPS` with pretrained VGG16 weights from a ``.safetensors`` file or a hub name.

    Weights that cannot be had raise one FileNotFoundError naming ``tokenizer.perceptual_weights``.
    """
    from safetensors.numpy import load_file

    if os.path.exists(source):
        path = source
    elif _is_hub_name(source):
        path = _download(source)
    else:
        raise _weights_missing(source, "no such file")
    tensors = dict(load_file(path))
    if lin_path is not None:
        tensors.update(load_file(lin_path) if lin_path.endswith(".safetensors") else dict(np.load(lin_path)))
    return load_state_dict(tensors)
