"""Conditional accuracy: the share of samples the domain classifier assigns to the label they were
generated for (the "classification accuracy" check of conditional GANs; e.g. Odena et al. 2017,
AC-GAN, section 4, with an external classifier). 1.0 = every sample shows its requested class;
1/K = the labels are ignored. Needs `fake["labels"]` (the requested labels, int (N,)).
"""
from __future__ import annotations

import numpy as np

from ..registry import UsageError
from .base import METRICS, as_f64


def conditional_accuracy(probs, labels) -> dict:
    """mean(argmax p(y|x) == requested label), overall and per requested class."""
    p = as_f64(probs, "probs")
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(y) != len(p):
        raise UsageError(f"conditional accuracy: {len(y)} labels for {len(p)} samples")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise UsageError(f"conditional accuracy: labels must be in 0..{p.shape[1] - 1} "
                         f"(the classifier's classes)")
    hit = p.argmax(1) == y
    per = [float(hit[y == k].mean()) if (y == k).any() else None for k in range(p.shape[1])]
    return {"conditional_accuracy": float(hit.mean()), "conditional_accuracy_per_class": per}


@METRICS.register("accuracy")
def accuracy(fake: dict, real: dict | None = None, train: dict | None = None) -> dict:
    """Conditional accuracy: share of samples classified as their requested label (conditional models)."""
    if fake.get("labels") is None:
        return {}  # unconditional samples: nothing to score (genlab eval refuses to ask for it)
    return conditional_accuracy(fake["probs"], fake["labels"])
