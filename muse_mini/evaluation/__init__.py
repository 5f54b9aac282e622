"""Judging generated images (Tables 1–2, Figure 8): ``frechet`` (FID's formula), ``features`` (the Shapes
feature network), ``fid`` (Shapes-FID), ``inception`` (Inception FID and CLIP score, optional extra),
``report`` and ``plots`` (``muse-mini evaluate``), ``claims`` (the paper's claims in miniature).
"""

from muse_mini.evaluation.fid import shapes_fid, shapes_stats
from muse_mini.evaluation.frechet import FeatureStats, feature_stats, frechet_distance

__all__ = ["FeatureStats", "feature_stats", "frechet_distance", "shapes_fid", "shapes_stats"]
