"""Stacked MNIST mode counting (Metz et al. 2017, "Unrolled GANs", section 3.3.2; Lin et al. 2018,
PacGAN, section 5.1): each channel of a (N, 3, 28, 28) sample is classified by the MNIST classifier;
the three digits give one of 1,000 modes, 100 * d_r + 10 * d_g + d_b. Reported: the number of modes
holding at least one sample (PacGAN's "modes", out of 1000; the papers draw 26,000 samples) and
KL(mode histogram || uniform over 1000) in nats (0 = all modes equally often, log 1000 = 6.91 = one).
"""
from __future__ import annotations

import numpy as np
import torch

from ..registry import UsageError

NUM_MODES = 1000


def mode_stats(modes, num_modes: int = NUM_MODES) -> dict:
    """Covered modes and KL(histogram || uniform) of integer modes in 0..num_modes-1."""
    m = np.asarray(modes).astype(np.int64).reshape(-1)
    if len(m) == 0 or m.min() < 0 or m.max() >= num_modes:
        raise UsageError(f"modes must be a non-empty array of integers in 0..{num_modes - 1}")
    counts = np.bincount(m, minlength=num_modes)
    hist = counts / counts.sum()
    nz = hist[hist > 0]
    return {"modes": int((counts > 0).sum()), "num_modes": int(num_modes),
            "kl_uniform": max(float(np.log(num_modes) + (nz * np.log(nz)).sum()), 0.0)}


def classify_channels(images, extractor: str = "mnist-cnn", batch_size: int = 500) -> np.ndarray:
    """uint8 (N, 3, 28, 28) -> modes (N,) = 100 * digit(R) + 10 * digit(G) + digit(B)."""
    from .features import extract
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise UsageError(f"stacked-mnist samples must be uint8 (N, 3, H, W), got {x.dtype} {tuple(x.shape)}")
    digits = [extract(extractor, x[:, c:c + 1], batch_size=batch_size)["probs"].argmax(1) for c in range(3)]
    return digits[0] * 100 + digits[1] * 10 + digits[2]
