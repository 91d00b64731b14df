"""Evaluation: FEATURES (uint8 images -> features + class probabilities) and METRICS (pure functions
of those), kept apart so features can be extracted once, cached, and scored by any metric.

    from genlab.metrics import extract, compute
    fake = extract("mnist-cnn", samples_uint8)         # {"features", "probs", "name", "weights_sha256"}
    real = extract("mnist-cnn", test_images_uint8)     # held-out real images
    compute(["fd", "kid", "pr", "cs", "classes"], fake, real)   # -> flat JSON-serialisable dict
    compute(["memorisation"], fake, real, train=extract("mnist-cnn", train_images_uint8))

A registered metric is `f(fake: dict, real: dict, train: dict | None) -> dict` with a one-line
docstring; the numerical work is in plain functions on arrays (frechet_distance, kernel_distance,
precision_recall, classifier_score, class_balance, memorisation) that tests check against closed
forms and reference implementations.
"""
from __future__ import annotations

import math

import numpy as np

from ..registry import Registry, UsageError

METRICS = Registry("metric")
DEFAULT_METRICS = ("fd", "kid", "pr", "cs", "classes")
NEEDS_NO_REAL = ("cs", "classes", "accuracy")  # functions of the samples' class probabilities only


def as_f64(x, what: str = "array") -> np.ndarray:
    """numpy or torch (N, D) -> float64 numpy, checked 2-D, non-empty and finite."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise UsageError(f"{what} must be a non-empty (N, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise UsageError(f"{what} hold non-finite values")
    return x


def compute(metric_names, fake: dict, real: dict | None = None, train: dict | None = None) -> dict:
    """Run the named METRICS on extracted features; one flat dict.

    `metric_names`: a list, or a comma-separated string ("fd,kid"); "all" means DEFAULT_METRICS.
    `real` should be held-out real images (the test split); `train` is needed by "memorisation" only.
    """
    if isinstance(metric_names, str):
        metric_names = [m.strip() for m in metric_names.split(",") if m.strip()]
    names = list(DEFAULT_METRICS) if list(metric_names) == ["all"] else list(metric_names)
    for other in (real, train):
        if other is not None and other.get("name") != fake.get("name"):
            raise UsageError(f"features come from different extractors ({fake.get('name')} vs {other.get('name')})")
    out = {"features": fake.get("name"), "weights_sha256": fake.get("weights_sha256"),
           "n_fake": len(fake["probs"] if "probs" in fake else fake["features"])}
    if real is not None:
        out["n_real"] = len(real["features"])
    if train is not None:
        out["n_train"] = len(train["features"])
    for name in names:
        fn = METRICS[name]
        if real is None and name not in NEEDS_NO_REAL:
            raise UsageError(f"metric {name!r} needs real features")
        out.update(fn(fake, real, train))
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


from . import classes, cond, fid, kid, memo, pr  # noqa: E402,F401  (each registers its metrics)
from .fid import frechet_distance, frechet_distance_from_stats  # noqa: E402
from .kid import kernel_distance  # noqa: E402
from .pr import precision_recall  # noqa: E402
from .classes import classifier_score, class_balance  # noqa: E402
from .memo import memorisation  # noqa: E402
from .cond import conditional_accuracy  # noqa: E402
from .features import FEATURES, extract, DEFAULT_FOR_DATA  # noqa: E402
