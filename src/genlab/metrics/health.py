"""The training loop's health check (`--eval-every N`): FD and class coverage of a few samples against
reference statistics computed once before training (reference.py)."""
from __future__ import annotations

import time

import torch

from ..data import to_uint8
from ..models.base import eval_mode
from .classes import class_balance
from .features import extract
from .fid import feature_stats, frechet_distance_from_stats
from .threads import blas_threads


def health(model, ref_stats: dict, n: int = 1000, seed: int = 0, batch_size: int = 500) -> dict:
    """n samples -> FD against the cached reference statistics and the class histogram's coverage /
    KL to uniform.

    `ref_stats` = reference_stats(data, "test", data_dir, image_size) computed once before training.
    Returns {"fd", "class_coverage", "class_kl_uniform", "confident_fraction", "n", "seconds"}; FD
    from 1,000 samples is biased upwards relative to 10,000 (compare values at equal n only). The
    model's train/eval mode and the global RNG state are left as they were.
    """
    from ..sample import draw  # imports torchvision (seconds): only when the check runs
    t0 = time.perf_counter()
    with eval_mode(model), torch.no_grad():
        x, _ = draw(model, n, seed, None, batch_size)
    f = extract(ref_stats["name"], to_uint8(x))
    with blas_threads(torch.get_num_threads()):
        mu, sigma = feature_stats(f["features"])
        bal = class_balance(f["probs"])
        fd = frechet_distance_from_stats(mu, sigma, ref_stats["mu"], ref_stats["sigma"])
    return {"fd": fd, "class_coverage": bal["class_coverage"], "class_kl_uniform": bal["class_kl_uniform"],
            "confident_fraction": bal["confident_fraction"], "n": int(n),
            "seconds": time.perf_counter() - t0}
