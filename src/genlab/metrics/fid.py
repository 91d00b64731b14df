"""Frechet distance between Gaussians fitted to two feature sets (FID's formula; Heusel et al. 2017).

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))       (Dowson & Landau 1982)

Means and covariances (ddof=1, as pytorch-fid) are computed in float64. The trace of the matrix square
root uses Tr((S_1 S_2)^(1/2)) = sum_i sqrt(l_i), with l_i the eigenvalues of the symmetric PSD matrix
S_1^(1/2) S_2 S_1^(1/2), which is similar to S_1 S_2. Two symmetric eigendecompositions (eigh) replace
scipy.linalg.sqrtm of the non-symmetric product: no complex parts, no epsilon retry for singular
covariances (which occur when some ReLU features are always 0), and it agrees with pytorch-fid's
`calculate_frechet_distance` to ~1e-12 relative where that is well defined (tests check 1e-6).
"""
from __future__ import annotations

import numpy as np

from ..registry import UsageError
from .base import METRICS, as_f64


def feature_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D), float64, unbiased (ddof=1)."""
    x = as_f64(x, "features")
    if len(x) < 2:
        raise UsageError(f"Frechet distance needs at least 2 samples per set, got {len(x)}")
    return x.mean(0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """d^2 between N(mu1, sigma1) and N(mu2, sigma2); clipped at 0 against round-off."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise UsageError(f"Frechet distance: shapes differ ({mu1.shape}, {s1.shape} vs {mu2.shape}, {s2.shape})")
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def frechet_distance(a, b) -> float:
    """Frechet distance between Gaussians fitted to feature arrays a (N, D) and b (M, D)."""
    a, b = as_f64(a, "features"), as_f64(b, "features")
    if a.shape[1] != b.shape[1]:
        raise UsageError(f"Frechet distance: feature sizes differ ({a.shape[1]} vs {b.shape[1]})")
    return frechet_distance_from_stats(*feature_stats(a), *feature_stats(b))


@METRICS.register("fd")
def fd(fake: dict, real: dict, train: dict | None = None) -> dict:
    """Frechet distance of domain-classifier features (FID formula; lower is better, 0 = same Gaussian)."""
    if real.get("mu") is not None and real.get("sigma") is not None:  # cached reference statistics
        return {"fd": frechet_distance_from_stats(*feature_stats(fake["features"]), real["mu"], real["sigma"])}
    return {"fd": frechet_distance(fake["features"], real["features"])}
