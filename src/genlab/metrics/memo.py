"""Memorisation check: are generated samples closer to the training set than unseen real data is?

In the spirit of the nearest-neighbour tests of Meehan et al. 2020 ("A Non-Parametric Test to Detect
Data-Copying in Generative Models") and the "nearest training image" figures of GAN papers. Distances
are Euclidean in the feature space given (genlab passes the domain classifier's 128-d features; the
function accepts any (N, D) arrays, e.g. flattened pixels):
  d_gen[j]  = distance from generated sample j to its nearest training image
  d_held[i] = distance from held-out real image i (never trained on) to its nearest training image
Reported: median(d_gen) / median(d_held) (about 1 for a generator that does not copy, towards 0 for
one that does), the share of generated samples closer than the 1st percentile of d_held (about 0.01
when not copying, towards 1 when copying), and the share at distance ~0 (exact copies).
"""
from __future__ import annotations

import numpy as np

from ..registry import UsageError
from .base import METRICS, as_f64

BLOCK = 1024


def nn_distances(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Euclidean distance from each row of x to its nearest row of ref (float64, blocked)."""
    ref_sq = (ref * ref).sum(1)
    out = np.empty(len(x))
    for i in range(0, len(x), BLOCK):
        c = x[i:i + BLOCK]
        d = (c * c).sum(1)[:, None] + ref_sq[None] - 2.0 * (c @ ref.T)
        out[i:i + BLOCK] = np.sqrt(np.maximum(d.min(1), 0.0))
    return out


def memorisation(generated, heldout, train, quantile: float = 0.01) -> dict:
    """NN distances to `train` of `generated` vs of `heldout` real samples; see the module docstring."""
    g, h, t = (as_f64(a, n) for a, n in ((generated, "generated"), (heldout, "held-out"), (train, "train")))
    if not g.shape[1] == h.shape[1] == t.shape[1]:
        raise UsageError("memorisation: feature sizes differ")
    d_gen, d_held = nn_distances(g, t), nn_distances(h, t)
    med_held = float(np.median(d_held))
    thresh = float(np.quantile(d_held, quantile))
    tiny = 1e-6 * max(float(np.sqrt((t * t).sum(1).mean())), 1e-12)
    return {"nn_median_ratio": float(np.median(d_gen)) / med_held if med_held > 0 else float("nan"),
            "nn_median_generated": float(np.median(d_gen)), "nn_median_heldout": med_held,
            "closer_than_heldout_p01": float((d_gen < thresh).mean()),
            "exact_copy_fraction": float((d_gen <= tiny).mean())}


@METRICS.register("memorisation")
def memo(fake: dict, real: dict, train: dict | None = None) -> dict:
    """NN distance of samples to the training set vs held-out real images (ratio ~1 fine, ~0 copies)."""
    if train is None:
        raise UsageError("the memorisation metric needs training-set features (train=...); "
                         "`real` must be held-out images, e.g. the test split")
    return memorisation(fake["features"], real["features"], train["features"])
