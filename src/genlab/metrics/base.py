"""The METRICS registry and `compute`, which runs registered metrics on extracted features (the package
docstring, metrics/__init__.py, describes both). Metric modules import the registry from here."""
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
