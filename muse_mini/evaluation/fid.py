"""Shapes-FID: the Fréchet distance in the Shapes feature network's space (FID with a judge for this world).

Used the way FID uses Inception: embed real scenes and generated images with
the same frozen network, fit a Gaussian to each set, and compare. Lower is
closer; two sets of real scenes drawn with different seeds give the floor that
sampling noise alone produces at that set size.
"""

from __future__ import annotations

import numpy as np

from muse_mini.evaluation.features import ShapesFeatureNet, embed, load_feature_net
from muse_mini.evaluation.frechet import FeatureStats, feature_stats, frechet_distance

_DEFAULT_NET: list[ShapesFeatureNet] = []


def default_net() -> ShapesFeatureNet:
    """The shipped feature network, loaded once per process."""
    if not _DEFAULT_NET:
        _DEFAULT_NET.append(load_feature_net())
    return _DEFAULT_NET[0]


def shapes_stats(images, net: ShapesFeatureNet | None = None) -> FeatureStats:
    """The Gaussian of a set of images' Shapes features (uint8, 32 or 64 px)."""
    return feature_stats(embed(net or default_net(), images)[0])


def reference_stats(reference, side: int, net: ShapesFeatureNet | None = None) -> FeatureStats:
    """The Gaussian of reference images judged at ``side`` px: 64 px ones are block-averaged to 32 px
    for 32 px images, as the base model's training images were."""
    reference = np.asarray(reference)
    if reference.shape[1] != side:
        from muse_mini.data.shapes import downsample

        if reference.shape[1] < side:
            raise ValueError(f"reference: {reference.shape[1]} px images cannot judge {side} px ones")
        reference = downsample(reference, reference.shape[1] // side)
    return shapes_stats(reference, net)


def shapes_fid(images, reference, net: ShapesFeatureNet | None = None) -> float:
    """Shapes-FID of ``images`` against ``reference`` (images or their :class:`FeatureStats`).

    Both sets are judged at the resolution of ``images`` (:func:`reference_stats`).
    """
    images = np.asarray(images)
    if not isinstance(reference, FeatureStats):
        reference = reference_stats(reference, images.shape[1], net)
    return frechet_distance(shapes_stats(images, net), reference)
