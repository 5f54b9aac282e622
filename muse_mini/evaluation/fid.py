"""Shapes-FID: the Fréchet distance in the Shapes feature network's space, used as FID uses Inception.

Two sets of real scenes from different seeds give the floor that sampling noise alone reaches.
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
    """The Gaussian of reference images judged at ``side`` px (64 px ones block-averaged for 32 px)."""
    reference = np.asarray(reference)
    if reference.shape[1] != side:
        from muse_mini.data.shapes import downsample

        if reference.shape[1] < side:
            raise ValueError(f"reference: {reference.shape[1]} px images cannot judge {side} px ones")
        reference = downsample(reference, reference.shape[1] // side)
    return shapes_stats(reference, net)


def shapes_fid(images, reference, net: ShapesFeatureNet | None = None) -> float:
    """Shapes-FID of ``images`` against ``reference`` (images or
    :class:`~muse_mini.evaluation.frechet.FeatureStats`), at ``images``' resolution."""
    images = np.asarray(images)
    if not isinstance(reference, FeatureStats):
        reference = reference_stats(reference, images.shape[1], net)
    return frechet_distance(shapes_stats(images, net), reference)
