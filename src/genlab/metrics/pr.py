"""Improved precision and recall (Kynkaanniemi et al. 2019, section 3), plus density and coverage
(Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics", eqs. 3-4) from the same k-NN balls.

Each sample's ball has radius = distance to its k-th nearest neighbour within its own set (k = 3, the
paper's default; self excluded, as torch-fidelity's kthvalue(k + 1)).
  precision = share of generated samples inside at least one real ball    (fidelity)
  recall    = share of real samples inside at least one generated ball    (diversity)
  density   = mean number of real balls a generated sample falls in, / k
  coverage  = share of real balls holding at least one generated sample
Euclidean distances in float64, computed in row blocks so 10k x 10k never holds a full matrix.
"""
from __future__ import annotations

import numpy as np

from ..registry import UsageError
from .base import METRICS, as_f64

BLOCK = 2048


def _sq_dists(x: np.ndarray, y: np.ndarray, y_sq: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + y_sq[None] - 2.0 * (x @ y.T)
    return np.maximum(d, 0.0, out=d)


def knn_radii_sq(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row."""
    if len(x) <= k:
        raise UsageError(f"precision/recall with k={k} needs more than {k} samples per set, got {len(x)}")
    x_sq = (x * x).sum(1)
    out = np.empty(len(x))
    for i in range(0, len(x), BLOCK):
        d = _sq_dists(x[i:i + BLOCK], x, x_sq)
        out[i:i + BLOCK] = np.partition(d, k, axis=1)[:, k]  # index 0 is the point itself
    return out


def precision_recall(real, fake, k: int = 3, real_radii_sq=None) -> dict:
    """Precision, recall, density, coverage of `fake` (M, D) against `real` (N, D).

    `real_radii_sq`: knn_radii_sq(real, k) computed earlier (genlab caches it with the reference set)."""
    real, fake = as_f64(real, "real features"), as_f64(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise UsageError(f"precision/recall: feature sizes differ ({real.shape[1]} vs {fake.shape[1]})")
    r_real = knn_radii_sq(real, k) if real_radii_sq is None else np.asarray(real_radii_sq, np.float64)
    if r_real.shape != (len(real),):
        raise UsageError(f"precision/recall: {r_real.shape} radii for {len(real)} real samples")
    r_fake = knn_radii_sq(fake, k)
    real_sq = (real * real).sum(1)
    in_real_ball = np.zeros(len(fake), bool)
    recalled = np.zeros(len(real), bool)
    covered = np.zeros(len(real), bool)
    density = 0
    for j in range(0, len(fake), BLOCK):
        d = _sq_dists(fake[j:j + BLOCK], real, real_sq)       # (block of fake, all real)
        inside = d <= r_real[None]
        in_real_ball[j:j + BLOCK] = inside.any(1)
        density += int(inside.sum())
        covered |= (d < r_real[None]).any(0)
        recalled |= (d <= r_fake[j:j + BLOCK, None]).any(0)
    p, r = float(in_real_ball.mean()), float(recalled.mean())
    return {"precision": p, "recall": r, "f_score": 2 * p * r / max(p + r, 1e-5),
            "density": density / (k * len(fake)), "coverage": float(covered.mean()), "pr_k": k}


@METRICS.register("pr")
def pr(fake: dict, real: dict, train: dict | None = None) -> dict:
    """Improved precision/recall (k=3 balls) with density and coverage; higher is better."""
    return precision_recall(real["features"], fake["features"], real_radii_sq=real.get("knn_radii_sq_k3"))
