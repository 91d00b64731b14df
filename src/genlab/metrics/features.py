"""FEATURES: feature extractors, uint8 images -> {features, probs}; the metrics are functions of these.

    out = extract("mnist-cnn", images_uint8)   # (N, C, H, W) uint8, torch or numpy
    out["features"]  # (N, 128) float64: the classifier's penultimate ReLU activations
    out["probs"]     # (N, 10) float64: softmax class probabilities
    out["name"], out["weights_sha256"]

Input rule (for every extractor): images must be uint8 in [0, 255], shaped (N, C, H, W) with C in
{1, 3} or (N, H, W). For the domain classifiers, RGB becomes grey by ITU-R BT.601 luma,
Y = 0.299 R + 0.587 G + 0.114 B (rounded to uint8); then images that are not 28x28 are resized to 28x28
with `genlab.images.resize` (bilinear with antialias). Other extractors state their own rule in their
`Extractor.input_rule`. Float generator output goes through `genlab.data.to_uint8` first, the same
quantisation `genlab sample --out x.npz` applies, so on-the-fly and saved samples score the same.

Each FEATURES entry is an `Extractor`: the function plus what evaluation and the reports need to know
about it (dimensions, class probabilities or not, input rule, pinned weights or how its weights file
is located and verified). A new extractor is one file that registers one Extractor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from ..data import to_float
from ..images import resize
from ..registry import Registry, UsageError

FEATURES = Registry("feature extractor")
LUMA_601 = (0.299, 0.587, 0.114)
CNN_INPUT_RULE = "extractor input rule: RGB -> BT.601 luma, resized to 28x28 (bilinear, antialias)"
FD_PROTOCOL = ("Frechet distance between Gaussians fitted (float64, ddof=1) to the extractor's {dims}-d "
               "penultimate features of samples and reference (the FID formula, Heusel et al. 2017)")


@dataclass(frozen=True)
class Extractor:
    """A feature extractor and what the metrics and every score's report need to know about it.

    `fn(images, batch_size, **options)` -> {"features" (N, dims) f64, "probs" (N, K) f64 (K = 0 without
    class probabilities), "name", "weights_sha256"}. Weights are either pinned and shipped
    (`weights_sha256`) or found by `locate(path or None) -> (path, sha256)`, which verifies them before
    any work; the command line then offers `weights_flag` to name the file."""
    name: str
    fn: Callable
    dims: int
    has_probs: bool
    input_rule: str                           # quoted in the protocol of every score
    protocol_fd: str = FD_PROTOCOL            # the fd protocol text ({dims} is filled in)
    weights_sha256: str | None = None         # pinned, shipped weights
    locate: Callable | None = None            # weights file located and verified at call time
    weights_flag: str | None = None           # e.g. --NAME-weights, for extractors with `locate`
    weights_help: str = ""
    flag_hint: str = ""                       # how to use weights_flag, quoted when it is misused
    report: dict = field(default_factory=dict)  # extra fields of a score's "features" entry
    batch_size: int = 250

    def __call__(self, images, batch_size: int | None = None, **options) -> dict:
        return self.fn(images, batch_size=batch_size or self.batch_size, **options)

    def resolve(self, weights=None, progress=None) -> tuple[dict, str, str | None]:
        """(options for the call, weights sha256, weights file or None): located and verified first,
        so that a missing or refused file fails before any sampling or feature extraction."""
        if self.locate is None:
            return {}, self.weights_sha256, None
        path, sha = self.locate(weights)
        return {"weights": path, "progress": progress}, sha, path

    def protocol(self, metric: str, default: str) -> str:
        return self.protocol_fd.format(dims=self.dims) if metric == "fd" else default


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
    from .classifier import FEATURE_DIM, PINNED  # classifier.py imports nothing of features.py
    return FEATURES.register(name)(Extractor(name, extract_cnn, FEATURE_DIM, True, CNN_INPUT_RULE,
                                             weights_sha256=PINNED[weights][1]))


_cnn_extractor("mnist")
_cnn_extractor("fashion-mnist")

# which extractor scores a data set by default (the CLI's `--features auto`)
DEFAULT_FOR_DATA = {"mnist": "mnist-cnn", "mnist-5k": "mnist-cnn", "fashion-mnist": "fashion-cnn"}


def extract(name: str, images, batch_size: int | None = None, **options) -> dict:
    """Run the registered extractor `name` on uint8 images; see the module docstring. `options` go to
    the extractor (those of `FEATURES[name].resolve()`: weights=PATH, progress=callable)."""
    return FEATURES[name](images, batch_size=batch_size, **options)

