"""The Fréchet distance between two feature distributions: FID's formula (Heusel et al., 2017; Tables 1–2)::

    d² = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)

The trace comes from the eigenvalues of the symmetric Σ₁^½ Σ₂ Σ₁^½, so no complex ``sqrtm``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Mean (D,) and covariance (D, D) of ``n`` feature vectors."""

    mean: np.ndarray
    cov: np.ndarray
    n: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "cov": self.cov, "n": np.asarray(self.n)}

    @classmethod
    def from_dict(cls, d) -> "FeatureStats":
        return cls(np.asarray(d["mean"], np.float64), np.asarray(d["cov"], np.float64), int(d["n"]))


def feature_stats(features_NxD) -> FeatureStats:
    """The Gaussian FID fits to a set of features (unbiased covariance, as FID's reference code)."""
    x = np.asarray(features_NxD, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features: expected an (N, D) array with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features: contain NaN or infinity")
    return FeatureStats(x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), len(x))


def _psd_sqrt(m_DxD: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((m_DxD + m_DxD.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """d² between the Gaussians of two feature sets (the number reported as FID)."""
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"features: the two sets have {a.mean.shape[0]} and {b.mean.shape[0]} dimensions")
    root_a = _psd_sqrt(a.cov)
    middle = root_a @ b.cov @ root_a
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = a.mean - b.mean
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * trace_root)
