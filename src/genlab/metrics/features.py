"""FEATURES: feature extractors, uint8 images -> {features, probs}; the metrics are functions of these.

    out = extract("mnist-cnn", images_uint8)   # (N, C, H, W) uint8, torch or numpy
    out["features"]  # (N, 128) float64: the classifier's penultimate ReLU activations
    out["probs"]     # (N, 10) float64: softmax class probabilities
    out["name"], out["weights_sha256"]

Input rule (for every extractor): images must be uint8 in [0, 255], shaped (N, C, H, W) with C in
{1, 3} or (N, H, W). For the domain classifiers, RGB becomes grey by ITU-R BT.601 luma,
Y = 0.299 R + 0.587 G + 0.114 B (rounded to uint8); then images that are not 28x28 are resized to 28x28
with `genlab.data.resize` (bilinear with antialias). `inception` (opt-in standard FID features,
inception.py) follows FID's own rule instead: grey replicated to RGB, 299x299 by a named resize. Float
generator output goes through `genlab.data.to_uint8` first, the same quantisation `genlab sample --out
x.npz` applies, so on-the-fly and saved samples score the same.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..data import resize, to_float
from ..registry import Registry, UsageError

FEATURES = Registry("feature extractor")
LUMA_601 = (0.299, 0.587, 0.114)


def check_images(images) -> torch.Tensor:
    """uint8 (N, C, H, W) / (N, H, W), torch or numpy -> uint8 (N, C, H, W) CPU tensor, C in {1, 3}."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(x, torch.Tensor):
        raise UsageError(f"images must be a torch tensor or numpy array, got {type(images).__name__}")
    if x.dtype != torch.uint8:
        raise UsageError(f"feature extraction takes uint8 images in [0, 255], got {x.dtype}; "
                         f"convert [-1, 1] floats with genlab.data.to_uint8")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise UsageError(f"images must be (N, C, H, W) with C in (1, 3) and N > 0, got {tuple(x.shape)}")
    return x.cpu()


def to_grey28(images) -> torch.Tensor:
    """Apply the input rule above: uint8 (N, C, H, W) / (N, H, W) -> uint8 (N, 1, 28, 28)."""
    x = check_images(images)
    if x.shape[1] == 3:
        w = torch.tensor(LUMA_601, dtype=torch.float32).view(1, 3, 1, 1)
        x = (x.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    return resize(x, 28)


@lru_cache(maxsize=None)
def _net(weights: str):
    from .classifier import load_classifier  # lazy: `python -m genlab.metrics.classifier` stays clean
    return load_classifier(weights)


def _cnn_extractor(weights: str):
    def extract_cnn(images, batch_size: int = 250) -> dict:
        from .classifier import PINNED
        x = to_grey28(images)
        net = _net(weights)
        feats, probs = [], []
        with torch.inference_mode():
            for chunk in x.split(batch_size):
                logits, h = net(to_float(chunk), features=True)
                feats.append(h.double())
                probs.append(torch.softmax(logits.double(), dim=1))
        return {"features": torch.cat(feats).numpy(), "probs": torch.cat(probs).numpy(),
                "name": name, "weights_sha256": PINNED[weights][1]}
    name = {"mnist": "mnist-cnn", "fashion-mnist": "fashion-cnn"}[weights]
    extract_cnn.__name__ = name.replace("-", "_")
    extract_cnn.__doc__ = f"Penultimate (128-d) features and class probabilities of the {weights} CNN."
    return extract_cnn


FEATURES.register("mnist-cnn")(_cnn_extractor("mnist"))
FEATURES.register("fashion-cnn")(_cnn_extractor("fashion-mnist"))

# which extractor scores a data set by default (the CLI's `--features auto`)
DEFAULT_FOR_DATA = {"mnist": "mnist-cnn", "mnist-5k": "mnist-cnn", "fashion-mnist": "fashion-cnn"}


def extract(name: str, images, batch_size: int = 250, **options) -> dict:
    """Run the registered extractor `name` on uint8 images; see the module docstring. `options` go to
    the extractor (inception: weights=PATH, progress=callable)."""
    return FEATURES[name](images, batch_size=batch_size, **options)

