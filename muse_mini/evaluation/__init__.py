"""Judging generated images: the Fréchet distance, the Shapes feature network, and ``muse-mini evaluate``.

- :mod:`~muse_mini.evaluation.frechet`: FID's formula on any features;
- :mod:`~muse_mini.evaluation.features`: the Shapes feature network (the judge behind Shapes-FID);
- :mod:`~muse_mini.evaluation.fid`: Shapes-FID;
- :mod:`~muse_mini.evaluation.inception`: Inception-v3 FID and CLIP score for photographs (optional extra);
- :mod:`~muse_mini.evaluation.report` and :mod:`~muse_mini.evaluation.plots`: the evaluate command's report.
"""

from muse_mini.evaluation.fid import shapes_fid, shapes_stats
from muse_mini.evaluation.frechet import FeatureStats, feature_stats, frechet_distance

__all__ = ["FeatureStats", "feature_stats", "frechet_distance", "shapes_fid", "shapes_stats"]
