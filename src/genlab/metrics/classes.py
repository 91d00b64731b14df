"""Metrics of the predicted class distribution p(y|x) alone (no real features needed).

classifier score: the Inception Score (Salimans et al. 2016, section 4) with the domain classifier,
    exp(E_x KL(p(y|x) || p(y))), p(y) = mean of p(y|x) over the split; between 1 (one class, or every
    prediction uniform) and 10 (confident predictions spread evenly). Computed like torch-fidelity's
    `isc_features_to_metric`: shuffled with RandomState(2020), 10 splits, mean and std.
class balance (mode collapse): histogram of argmax classes; KL(histogram || uniform) = log K - H(hist)
    in nats (0 = even, log 10 = 2.30 = one class); coverage = share of classes holding at least 10% of
    their fair share N/K of samples; confident = share of samples with max p(y|x) >= 0.9.
"""
from __future__ import annotations

import numpy as np

from ..registry import UsageError
from .base import METRICS, as_f64


def _probs(p) -> np.ndarray:
    p = as_f64(p, "probs")
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-6):
        raise UsageError("probs must be rows of non-negative numbers summing to 1")
    return p


def classifier_score(probs, splits: int = 10, seed: int = 2020) -> dict:
    """exp(E[KL(p(y|x) || p(y))]) per split: mean and std over `splits` (1 <= score <= classes)."""
    p = _probs(probs)
    n = len(p)
    splits = max(1, min(splits, n))
    p = p[np.random.RandomState(seed).permutation(n)]
    logp = np.log(np.clip(p, 1e-300, None))
    scores = []
    for i in range(splits):
        c, lc = p[i * n // splits:(i + 1) * n // splits], logp[i * n // splits:(i + 1) * n // splits]
        q = c.mean(0, keepdims=True)
        kl = (c * (lc - np.log(np.clip(q, 1e-300, None)))).sum(1).mean()
        scores.append(np.exp(kl))
    return {"classifier_score": float(np.mean(scores)), "classifier_score_std": float(np.std(scores)),
            "classifier_score_splits": int(splits)}


def class_balance(probs, confident: float = 0.9, min_share: float = 0.1) -> dict:
    """Argmax-class histogram, its KL to uniform (nats), class coverage and the confident fraction."""
    p = _probs(probs)
    k = p.shape[1]
    counts = np.bincount(p.argmax(1), minlength=k)
    hist = counts / counts.sum()
    nz = hist[hist > 0]
    kl = float(np.log(k) + (nz * np.log(nz)).sum())
    return {"class_histogram": [float(h) for h in hist],
            "class_kl_uniform": max(kl, 0.0),
            "class_coverage": float((counts >= max(1.0, min_share * len(p) / k)).mean()),
            "confident_fraction": float((p.max(1) >= confident).mean())}


@METRICS.register("cs")
def cs(fake: dict, real: dict | None = None, train: dict | None = None) -> dict:
    """Classifier score, the Inception Score with the domain classifier (1..10, higher is better)."""
    return classifier_score(fake["probs"])


@METRICS.register("classes")
def classes(fake: dict, real: dict | None = None, train: dict | None = None) -> dict:
    """Class histogram, KL to uniform (0 best), class coverage, confident fraction (mode collapse)."""
    return class_balance(fake["probs"])
