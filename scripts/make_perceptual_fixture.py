"""Make tests/fixtures/perceptual/reference.npz: a PyTorch reference for muse_mini.models.perceptual.

Run with a separate venv that has torch (never the project's own)::

    /tmp/torchvenv2/bin/python scripts/make_perceptual_fixture.py

VGG16's conv stack is built from plain ``torch.nn`` layers in torchvision's
``features`` layout, with weights drawn from a NumPy seed by
:func:`random_vgg16_weights` (the test calls the same function, so 59 MB of
weights never enter the repository). Only the inputs, the first channels of the five
tapped feature maps and the LPIPS-style distances are saved.
"""

from __future__ import annotations

import pathlib

import numpy as np

LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAP_CHANNELS = (64, 128, 256, 512, 512)
SEED = 1234
OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "perceptual" / "reference.npz"


def random_vgg16_weights(seed: int = SEED) -> dict[str, np.ndarray]:
    """Deterministic He-scaled VGG16 conv weights and positive LPIPS lin weights, torchvision names."""
    rng = np.random.default_rng(seed)
    tensors, cin, idx = {}, 3, 0
    for item in LAYOUT:
        if item == "M":
            idx += 1
            continue
        std = np.sqrt(2.0 / (cin * 9))
        tensors[f"features.{idx}.weight"] = (rng.standard_normal((item, cin, 3, 3)) * std).astype(np.float32)
        tensors[f"features.{idx}.bias"] = (rng.standard_normal(item) * 0.01).astype(np.float32)
        cin, idx = item, idx + 2
    for k, c in enumerate(TAP_CHANNELS):
        tensors[f"lin{k}.model.1.weight"] = rng.uniform(0.0, 2.0 / c, (1, c, 1, 1)).astype(np.float32)
    return tensors


def main() -> None:
    import torch
    from torch import nn

    torch.set_grad_enabled(False)
    tensors = random_vgg16_weights()
    layers, cin = [], 3
    for item in LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, item, 3, padding=1), nn.ReLU()]
            cin = item
    features = nn.Sequential(*layers)
    features.load_state_dict({k.removeprefix("features."): torch.from_numpy(v)
                              for k, v in tensors.items() if k.startswith("features.")})
    taps = (3, 8, 15, 22, 29)

    rng = np.random.default_rng(7)
    a = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1).astype(np.float32)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def tapped(x):
        h, out = (torch.from_numpy(x) - shift) / scale, []
        for i, layer in enumerate(features):
            h = layer(h)
            if i in taps:
                out.append(h)
        return out

    def normalize(f):
        return f / (torch.sqrt((f**2).sum(dim=1, keepdim=True)) + 1e-10)

    fa, fb = tapped(a), tapped(b)
    uniform = sum(((normalize(x) - normalize(y)) ** 2).mean(dim=(1, 2, 3)) for x, y in zip(fa, fb))
    lin = sum(
        ((normalize(x) - normalize(y)) ** 2 * torch.from_numpy(tensors[f"lin{k}.model.1.weight"]))
        .sum(dim=1).mean(dim=(1, 2))
        for k, (x, y) in enumerate(zip(fa, fb))
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT, seed=SEED, a=a, b=b, distance_uniform=uniform.numpy(), distance_lin=lin.numpy(),
        # The first 8 channels of each tap keep the file small and still pin every layer.
        **{f"features_a_{k}": f[:, :8].numpy() for k, f in enumerate(fa)},
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB); uniform {uniform.numpy()}, lin {lin.numpy()}")


if __name__ == "__main__":
    main()
