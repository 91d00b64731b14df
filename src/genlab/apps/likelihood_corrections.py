"""Anomaly scores that correct a likelihood for what makes an image likely under *any* model of
images, whatever the training data (apps/anomaly.py's `complexity`, `recon-complexity`, `ratio`).

A generative model's likelihood is dominated by low-level statistics: MNIST digits with little ink
(1s, 7s) get a high likelihood from a VAE trained on any digit, so the raw -ELBO ranks them as normal
(README "Anomaly detection": AUROC 0.03 for held-out 1s). Two published corrections:

  * input complexity (Serra et al. 2020, "Input Complexity and Out-of-Distribution Detection with
    Likelihood-Based Generative Models", ICLR, eq. 2): S(x) = -log2 p(x) - L(x), L(x) the length in
    bits of x under a generic lossless compressor (PNG here, one of the three they used), read as a
    likelihood ratio against a universal model of images: x is anomalous when the model codes it no
    better than a compressor does. `complexity` uses the -ELBO in bits for -log2 p(x);
    `recon-complexity` the reconstruction term alone, -log2 p(x | z = mu(x)), the model's code for x
    at its posterior mean (the same correction applied to the reconstruction score);
  * likelihood ratio (Ren et al. 2019, "Likelihood Ratios for Out-of-Distribution Detection",
    NeurIPS, eq. 5): S(x) = -log p_model(x) + log p_background(x), the background model trained on the
    same normal data with perturbed inputs (models/vae.py's `perturb`: a fraction of the pixels set to
    random grey levels), so that it learns the background statistics and not the semantics.

Both use only the normal training data: valid under both protocols of benchmarks/bench_anomaly.py.
The VAE's Bernoulli likelihood of grey-level pixels (the usual "soft" BCE) is not a code length of
the 8-bit image, so `complexity` mixes two different units; it is measured, not assumed, to help.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

from ..data import to_uint8
from ..models import Likelihood
from ..registry import UsageError


def hwc_uint8(x: torch.Tensor) -> np.ndarray:
    """float (B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C) as Pillow takes it (data.to_uint8's levels)."""
    return to_uint8(x.cpu()).permute(0, 2, 3, 1).numpy()


def png_bits(x: torch.Tensor) -> torch.Tensor:
    """L(x) (B,) float64: bits of each image's PNG file (Pillow, optimize=True: the smallest of its
    zlib settings), header included (a constant per image shape: it shifts every score equally)."""
    out = []
    for a in hwc_uint8(x):
        buf = io.BytesIO()
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, format="PNG", optimize=True)
        out.append(8 * len(buf.getvalue()))
    return torch.tensor(out, dtype=torch.float64)


def complexity_score(neg_log_p_nats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Serra et al. 2020, eq. 2: S(x) = -log2 p(x) - L(x) in bits, from -log p(x) in nats (B,)."""
    return neg_log_p_nats.double() / math.log(2) - png_bits(x)


def recon_nll(model, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | z = mu(x)) (B,) in nats: the decoder's likelihood of x at the posterior mean."""
    mu, _ = model.encode(x)
    return -model.log_likelihood(x, model.decode(mu)).double()


def likelihood_ratio(neg_elbo_model: torch.Tensor, neg_elbo_background: torch.Tensor) -> torch.Tensor:
    """Ren et al. 2019, eq. 5 (negated, higher = more anomalous): -log p(x) + log p_background(x)."""
    return neg_elbo_model.double() - neg_elbo_background.double()


def check_background(model, background) -> None:
    """The background model of `ratio` must be a likelihood model of the same image shape."""
    if background is None:
        raise UsageError("--method ratio needs --background RUN: the same model trained on the same "
                         "data with --perturb (e.g. 0.15; Ren et al. 2019)")
    if not isinstance(background, Likelihood) or tuple(background.shape) != tuple(model.shape):
        raise UsageError(f"the --background run must be a vae of the model's image shape "
                         f"{tuple(model.shape)}")
