"""A feature network for the Shapes world: the judge behind Shapes-FID, as Inception-v3 is FID's.

A small CNN trained to read a scene's colours, shapes, colour–shape pairs, object count and
centres; its 128-d penultimate layer is the feature. Its training images are blurred, noised
and colour-shifted like generated ones. The project ships its weights
(``shapes_features.eqx``), so Shapes-FIDs from different machines share one judge.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from muse_mini.data import shapes
from muse_mini.data.captions import ALL_PAIRS, COLOURS, SHAPES
from muse_mini.data.evaluator import as_image
from muse_mini.runs.checkpoint import load_checkpoint, read_header, save_checkpoint

SHIPPED = Path(__file__).with_name("shapes_features.eqx")
FEATURE_DIM = 128
GRID = 4  # object centres are located on a GRID × GRID grid
MAX_COUNT = 4
COLOUR_NAMES = list(COLOURS)
PAIRS = list(ALL_PAIRS)
#: The network's output heads as (name, width, kind); "set" heads are independent yes/no per entry.
HEADS = (("colours", len(COLOURS), "set"), ("shapes", len(SHAPES), "set"), ("pairs", len(PAIRS), "set"),
         ("count", MAX_COUNT, "class"), ("cells", GRID * GRID, "set"))


@dataclasses.dataclass(frozen=True)
class FeatureTraining:
    """How the shipped network was trained (``muse-mini train-features`` takes each as a flag)."""

    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 2e-3
    num_examples: int = 12000
    seed: int = 7  # the Shapes seed of its training scenes (models train on seed 0)


class ShapesFeatureNet(eqx.Module):
    """Four stride-2 convolutions (64 → 4 px), each also max-pooled, a 128-d feature layer, one linear head."""

    convs: list
    feature: eqx.nn.Linear
    heads: eqx.nn.Linear

    def __init__(self, *, key):
        keys = jax.random.split(key, 6)
        widths = (3, 16, 32, 64, 64)
        self.convs = [eqx.nn.Conv2d(a, b, 3, stride=2, padding=1, key=k)
                      for a, b, k in zip(widths, widths[1:], keys)]
        self.feature = eqx.nn.Linear(64 * GRID * GRID + sum(widths[1:]), FEATURE_DIM, key=keys[4])
        self.heads = eqx.nn.Linear(FEATURE_DIM, sum(w for _, w, _ in HEADS), key=keys[5])

    def features(self, image_3xHxW: jax.Array) -> jax.Array:
        """The 128-d feature of one image (channels first, values in [0, 1], 64×64)."""
        x = image_3xHxW * 2 - 1
        peaks = []  # each layer's strongest response anywhere: "is there a red patch / an edge like this"
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
            peaks.append(x.max(axis=(1, 2)))
        return jax.nn.relu(self.feature(jnp.concatenate([x.reshape(-1), *peaks])))

    def __call__(self, image_3xHxW: jax.Array) -> jax.Array:
        return self.heads(self.features(image_3xHxW))


def targets(scene_objects) -> np.ndarray:
    """One scene's attribute vector, laid out as :data:`HEADS` (the count head as one-hot)."""
    parts = {name: np.zeros(width, np.float32) for name, width, _ in HEADS}
    for obj in scene_objects:
        parts["colours"][COLOUR_NAMES.index(obj.colour)] = 1
        parts["shapes"][SHAPES.index(obj.shape)] = 1
        parts["pairs"][PAIRS.index((obj.colour, obj.shape))] = 1
        row, col = (min(int(v * GRID // shapes.CANVAS), GRID - 1) for v in (obj.cy, obj.cx))
        parts["cells"][row * GRID + col] = 1
    parts["count"][min(len(scene_objects), MAX_COUNT) - 1] = 1
    return np.concatenate([parts[name] for name, _, _ in HEADS])


def as_inputs(images) -> np.ndarray:
    """uint8 N×H×W×3 images at 32 or 64 px as the network's float32 N×3×64×64 (32 px doubled, nearest)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    as_image(images[0], name="images[0]")  # shape and dtype checks, with the evaluator's messages
    if images.shape[1] not in (shapes.LOW_RES, shapes.CANVAS):
        raise ValueError(f"images: expected 32×32 or 64×64, got {images.shape[1]}×{images.shape[2]}")
    factor = shapes.CANVAS // images.shape[1]
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def _split_logits(logits_B):
    out, start = {}, 0
    for name, width, kind in HEADS:
        out[name] = (logits_B[..., start:start + width], kind)
        start += width
    return out


def _loss(model, x_Bx3xHxW, y_BxK):
    logits = jax.vmap(model)(x_Bx3xHxW)
    total = 0.0
    targets_by_head = _split_logits(y_BxK)
    for name, (head_logits, kind) in _split_logits(logits).items():
        target = targets_by_head[name][0]
        if kind == "set":
            total += optax.sigmoid_binary_cross_entropy(head_logits, target).mean()
        else:
            total += optax.softmax_cross_entropy(head_logits, target).mean()
    return total


def _augment(x_Bx3xHxW, key):
    """Blur half the batch to the base resolution; add noise and a colour shift to all (generated images)."""
    k_blur, k_noise, k_scale, k_shift = jax.random.split(key, 4)
    batch = x_Bx3xHxW.shape[0]
    low = x_Bx3xHxW.reshape(batch, 3, 32, 2, 32, 2).mean(axis=(3, 5)).repeat(2, axis=2).repeat(2, axis=3)
    blur = jax.random.bernoulli(k_blur, 0.5, (batch, 1, 1, 1))
    x = jnp.where(blur, low, x_Bx3xHxW)
    sigma = jax.random.uniform(k_scale, (batch, 1, 1, 1), maxval=0.05)
    x = x + sigma * jax.random.normal(k_noise, x.shape)
    x = x + jax.random.uniform(k_shift, (batch, 3, 1, 1), minval=-0.05, maxval=0.05)
    return jnp.clip(x, 0, 1)


def training_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Shapes scenes (both splits, every kind, alternating) as uint8 images and attribute targets."""
    half = n // 2
    images_a, _, scenes_a = shapes.generate(n - half, seed=seed, split="train")
    images_b, _, scenes_b = shapes.generate(half, seed=seed, split="holdout")
    images = np.concatenate([images_a, images_b])
    y = np.stack([targets(s.objects) for s in (*scenes_a, *scenes_b)])
    return images, y


def train_feature_net(settings: FeatureTraining = FeatureTraining(), *, progress: bool = True) -> ShapesFeatureNet:
    """Train the network from scratch; the same settings on the same machine give the same weights."""
    images, y = training_data(settings.num_examples, settings.seed)
    key_init, key_data = jax.random.split(jax.random.key(settings.seed))
    model = ShapesFeatureNet(key=key_init)
    optimiser = optax.adam(optax.cosine_decay_schedule(settings.learning_rate, settings.steps))
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state, x, y, key):
        loss, grads = eqx.filter_value_and_grad(_loss)(model, _augment(x, key), y)
        updates, opt_state = optimiser.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state, loss

    order = np.random.default_rng(settings.seed)
    bar = tqdm(range(settings.steps), desc="shapes features", disable=not progress)
    for i in bar:
        idx = order.integers(0, len(images), settings.batch_size)
        model, opt_state, loss = step(model, opt_state, as_inputs(images[idx]), y[idx], jax.random.fold_in(key_data, i))
        if i % 100 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}")
    return model


def save_feature_net(path, model: ShapesFeatureNet, settings: FeatureTraining, *, accuracy: dict | None = None) -> Path:
    """Write the weights with how they were trained (and scored) in the header."""
    metadata = {"kind": "shapes_features", "training": dataclasses.asdict(settings), "heldout_accuracy": accuracy}
    return save_checkpoint(path, model, metadata=metadata)


def load_feature_net(path=None) -> ShapesFeatureNet:
    """The network at ``path`` (default: the weights the project ships)."""
    path = Path(path) if path is not None else SHIPPED
    if not path.is_file():
        raise FileNotFoundError(f"features: no feature network at {path}; train one with "
                                f"`muse-mini train-features --out {path}`")
    if read_header(path)["metadata"].get("kind") != "shapes_features":
        raise ValueError(f"features: {path} is not a Shapes feature network")
    like = eqx.filter_eval_shape(ShapesFeatureNet, key=jax.random.key(0))
    return load_checkpoint(path, like)[0]


@eqx.filter_jit
def _batch_features(model, x):
    return jax.vmap(model.features)(x), jax.vmap(model)(x)


def embed(model: ShapesFeatureNet, images, *, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(features N×128, attribute logits N×K) of uint8 images at 32 or 64 px."""
    images = np.asarray(images)
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        chunk = as_inputs(images[start:start + batch_size])
        pad = batch_size - len(chunk) if len(images) > batch_size else 0  # one compiled shape per call
        f, l = _batch_features(model, np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)]))
        feats.append(np.asarray(f)[:len(chunk)])
        logits.append(np.asarray(l)[:len(chunk)])
    return np.concatenate(feats), np.concatenate(logits)


def attribute_accuracy(model: ShapesFeatureNet, images, y_NxK) -> dict:
    """Per head, the fraction of images whose whole attribute set (or count) the network reads exactly."""
    _, logits = embed(model, images)
    predicted, truth = _split_logits(logits), _split_logits(np.asarray(y_NxK))
    out = {}
    for name, (head, kind) in predicted.items():
        target = truth[name][0]
        if kind == "set":
            out[name] = float(((head > 0) == (target > 0.5)).all(axis=1).mean())
        else:
            out[name] = float((head.argmax(axis=1) == target.argmax(axis=1)).mean())
    return out


def heldout_accuracy(model: ShapesFeatureNet, n: int, seed: int) -> dict:
    """:func:`attribute_accuracy` on ``n`` unseen scenes, as rendered (64 px) and decimated to the base 32 px."""
    images, y = training_data(n, seed)
    return {"64px": attribute_accuracy(model, images, y),
            "32px": attribute_accuracy(model, shapes.downsample(images), y)}
