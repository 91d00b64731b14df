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
from .base import DEFAULT_METRICS, METRICS, NEEDS_NO_REAL, as_f64, compute  # noqa: F401
from . import classes, cond, fid, kid, memo, pr  # noqa: F401  (each registers its metrics)
from .fid import frechet_distance, frechet_distance_from_stats  # noqa
from .kid import kernel_distance  # noqa
from .pr import precision_recall  # noqa
from .classes import classifier_score, class_balance  # noqa
from .memo import memorisation  # noqa
from .cond import conditional_accuracy  # noqa
from .features import FEATURES, extract, DEFAULT_FOR_DATA  # noqa
from . import inception  # noqa: F401  (registers the opt-in standard FID features)
