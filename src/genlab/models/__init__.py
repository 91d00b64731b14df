"""MODELS: name -> config dataclass; `config.build(shape, num_classes)` returns the model. Adding a
model is one file in this folder plus one decorator: every module here is imported, and the
registry-wide tests cover what it registers.

The model contract, written down as Protocols (structural: a model satisfies them by having the
methods, and `isinstance(model, Autoencoder)` checks it). The training loop needs `Trainable`;
sampling and evaluation need `Generator`; reconstructions need `Autoencoder`; the NLL and the
likelihood anomaly scores need `Likelihood`; GAN anomaly scores (D(x), AnoGAN's inversion) need
`Adversarial`; latent walks and maps need `SoftLabels` and `Discriminator`; an application
(genlab/apps/) names the Protocol it needs. Conditional-ness is data:
`num_classes` (0 = unconditional), never a hasattr check.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from .base import MODELS, adam, place  # noqa: F401  (the registry and helpers model files share)


@runtime_checkable
class Trainable(Protocol):
    """What the loop (train.py) calls: one optimiser per name, and one training step that consumes
    batches from `batches` (an iterator of (x, y)), updates through `opt` and draws its noise from
    `generator`; it returns scalar tensors to log. `loss_stats` names those plotted in losses.png.
    Each parameter belongs to one optimiser, and train_step updates through them (guard.update) in
    the order configure_optimizers() lists them, the last one once and last (D then G; the VAE's
    one): a failed update raises before its step, so guard.StepSnapshot copies only the buffers and
    the earlier optimisers' parameters and moments."""
    config: object
    loss_stats: tuple[str, ...]

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def train_step(self, batches, opt: dict, generator=None) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class Generator(Protocol):
    """Draws images (n, C, H, W) in [-1, 1]. `generate(z, y)` is the deterministic map from chosen
    latents z (n, z_dim) (and labels y (n,) when num_classes > 0); `sample` draws z ~ N(0, I) from
    `generator` and labels i % num_classes unless given."""
    num_classes: int
    z_dim: int

    def sample(self, n: int, labels=None, generator=None) -> torch.Tensor: ...

    def generate(self, z: torch.Tensor, y=None) -> torch.Tensor: ...


@runtime_checkable
class Autoencoder(Protocol):
    """encode: x -> (mu, logvar) of q(z|x); decode: z -> decoder output; reconstruct: x -> the
    decoder mean at z = mu(x), same shape and range as x."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SoftLabels(Protocol):
    """A Generator whose G reads the class label through an embedding (cgan, conditional rnngan), so
    that it also takes soft labels: w (n, K), rows >= 0 summing to 1, give G the w-weighted sum of the
    label embeddings. A class-to-class latent walk moves w from one class to another with z fixed
    (apps/interpolate.py). Meaningful only when num_classes > 0 (conditional-ness is data)."""

    def generate_soft(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Discriminator(Protocol):
    """A model with a discriminator D whose per-image penultimate features phi(x) (n, f) (what D's
    last linear layer reads) describe real images: the latent map of a GAN (apps/embed.py)."""

    def d_features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class Likelihood(Protocol):
    """A latent-variable model with a decoder density (the VAE): what the ELBO and the IWAE bound
    need (metrics/nll.py, apps/anomaly.py). `log_likelihood(x, out)` is log p(x|z) per image (B,) in
    nats for the decoder output out = decode(z); `elbo(x, generator, samples)` the per-image ELBO (B,)."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...

    def log_likelihood(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor: ...

    def elbo(self, x: torch.Tensor, generator=None, samples: int = 1) -> torch.Tensor: ...


@runtime_checkable
class Adversarial(Protocol):
    """A GAN's two networks, for scoring real images (apps/anomaly.py): G(z, y) -> x (B, C, H, W) in
    [-1, 1] and D(x, y) -> logits (B,), y the labels (None for unconditional models)."""
    G: torch.nn.Module
    D: torch.nn.Module
    z_dim: int
    num_classes: int


@runtime_checkable
class Loaded(Protocol):
    """What `genlab.load` (run.py) records on a model it loads from a run folder."""
    name: str                 # its MODELS name
    run_dir: Path
    checkpoint: Path
    step: int
    train_config: dict        # the run options it was trained with


for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _m != "base":
        importlib.import_module(f"{__name__}.{_m}")
