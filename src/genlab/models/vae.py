"""Variational autoencoder: Kingma & Welling 2014, "Auto-Encoding Variational Bayes"; the `beta`
weight on the KL term is the beta-VAE of Higgins et al. 2017.

An encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))), a prior p(z) = N(0, I) and a decoder p(x|z) are
trained together by maximising the evidence lower bound (K&W eq. 3), per image, in nats:

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)

with one reparameterised sample z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) (K&W section 2.4)
drawn from the run's noise generator. The training loss is recon + beta * KL, recon = -log p(x|z).

Likelihoods (`likelihood`), for x in [-1, 1] as the loop gives it:
  * bernoulli: pixels as probabilities, p = (x + 1) / 2; recon = BCE(decoder logits, p), summed over
    pixels (K&W's MNIST choice). For grey-level data this is the usual "soft" BCE, not a density;
  * gaussian: a per-channel learned sigma around the decoder mean, discretised to the 256 grey levels
    (each pixel's probability is the Gaussian mass of its bin, the end bins reaching to +-inf, as in
    Ho et al. 2020's decoder), so the ELBO bounds log P(x) of the uint8 image and
    bits/dim = -ELBO / (C * H * W * ln 2);
  * auto (default): bernoulli for grey images of at most 28 px (MNIST-like strokes), gaussian
    otherwise (photos, faces). The resolved choice is what the run records.

The networks are convolutional for 28, 32, 64 or 128 px (grey or RGB): the encoder halves the image
with strided 4x4 convolutions down to 7x7 (28 px) or 4x4 (32-128 px), the decoder mirrors it with
transposed convolutions, like dcgan.py's G and D, without batch norm, so that train and eval mode
compute the same ELBO.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import opt
from ..distributed import rand, randn
from ..guard import update
from ..registry import UsageError
from ..precision import Precision
from .base import MODELS, adam, check_count, eval_mode
from .dcgan import start_size

HALF_BIN = 1 / 255  # half the spacing of the grey levels k / 127.5 - 1 in [-1, 1]


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(s^2)) || N(0, I)) per row, in nats, s^2 = exp(logvar). One dimension:

        KL = E_q[log q(z) - log p(z)]
           = E_q[-1/2 log(2 pi s^2) - (z - mu)^2 / (2 s^2) + 1/2 log(2 pi) + z^2 / 2]
           = -1/2 log s^2 - 1/2 + 1/2 (mu^2 + s^2)        (E_q[(z-mu)^2] = s^2, E_q[z^2] = mu^2 + s^2)
           = 1/2 (mu^2 + s^2 - 1 - log s^2)

    and both distributions factorise over dimensions, so the KL is the sum (K&W appendix B)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)


def bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x|z) per image: sum over pixels of -BCE(logits, (x + 1) / 2), x in [-1, 1]."""
    p = (x + 1) / 2
    return -F.binary_cross_entropy_with_logits(logits, p, reduction="none").flatten(1).sum(1)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor,
                                        log_sigma: torch.Tensor) -> torch.Tensor:
    """log P(x|z) per image of uint8-valued x (as k / 127.5 - 1): the N(mean, sigma^2) mass of each
    pixel's bin [x - 1/255, x + 1/255], the bins of 0 and 255 extended to -inf and +inf."""
    inv = torch.exp(-log_sigma)
    hi, lo = (x + HALF_BIN - mean) * inv, (x - HALF_BIN - mean) * inv
    # log(Phi(hi) - Phi(lo)), evaluated in the left tail where log_ndtr is accurate:
    # Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi) when the bin lies right of the mean
    right = hi + lo > 0
    b, a = torch.where(right, -lo, hi), torch.where(right, -hi, lo)
    lb, la = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    mid = lb + torch.log((-torch.expm1(la - lb)).clamp_min(1e-30))
    logp = torch.where(x < -1 + HALF_BIN, torch.special.log_ndtr(hi),        # grey level 0
                       torch.where(x > 1 - HALF_BIN, torch.special.log_ndtr(-lo), mid))  # 255
    return logp.flatten(1).sum(1)


def perturb(x: torch.Tensor, rate: float, generator=None) -> torch.Tensor:
    """x with each pixel, with probability `rate`, replaced by one of the 256 grey levels drawn
    uniformly: the input perturbation that trains the background model of Ren et al. 2019
    ("Likelihood Ratios for Out-of-Distribution Detection", NeurIPS, section 3.1; rate 0.1-0.2)."""
    n, dims = len(x), x.shape[1:]
    hit = rand(n, *dims, generator=generator, device=x.device) < rate
    level = torch.floor(rand(n, *dims, generator=generator, device=x.device) * 256) / 127.5 - 1
    return torch.where(hit, level.to(x.dtype), x)


def channels(nf: int, max_ch: int, k: int) -> list[int]:
    return [min(nf * 2 ** i, max_ch) for i in range(k)]


class Encoder(nn.Module):
    def __init__(self, shape, z_dim: int, nf: int, max_ch: int):
        super().__init__()
        C, H, W = shape
        s0, k = start_size(H)
        layers, c_in = [], C
        for c in channels(nf, max_ch, k):
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * s0 * s0, 2 * z_dim)

    def forward(self, x):                              # (B, C, H, W) -> mu, logvar: (B, z_dim) each
        return self.head(self.features(x).flatten(1)).chunk(2, dim=1)


class Decoder(nn.Module):
    def __init__(self, shape, z_dim: int, nf: int, max_ch: int):
        super().__init__()
        C, H, W = shape
        s0, k = start_size(H)
        ch = channels(nf, max_ch, k)[::-1]             # e.g. 28 px: [64, 32]
        self.s0, self.ch0 = s0, ch[0]
        self.project = nn.Sequential(nn.Linear(z_dim, ch[0] * s0 * s0), nn.LeakyReLU(0.2, True))
        blocks, c_in = [], ch[0]
        for c in ch[1:]:
            blocks += [nn.ConvTranspose2d(c_in, c, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            c_in = c
        # the last upsampling writes the image: logits (bernoulli) or means (gaussian). A full-size
        # feature map plus a 3x3 output conv cost 6x more time at 128 px (measured, 1 thread)
        blocks += [nn.ConvTranspose2d(c_in, C, 4, 2, 1)]
        self.net = nn.Sequential(*blocks)

    def forward(self, z):                              # (B, z_dim) -> (B, C, H, W)
        return self.net(self.project(z).view(len(z), self.ch0, self.s0, self.s0))


class VAE(Precision, nn.Module):
    """Encoder, decoder and (gaussian likelihood) a learned log sigma per channel."""
    loss_stats = ("loss", "recon", "kl")  # plotted in losses.png

    def __init__(self, config: "VAEConfig", shape, num_classes: int = 0):
        super().__init__()
        self.config, self.shape, self.num_classes = config, tuple(shape), 0  # unconditional
        self.likelihood = config.likelihood
        self.encoder = Encoder(shape, config.z_dim, config.nf, config.max_ch)
        self.decoder = Decoder(shape, config.z_dim, config.nf, config.max_ch)
        if self.likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.full((shape[0], 1, 1), math.log(config.sigma_init)))

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        return {"vae": adam(self.parameters(), c.lr, (c.beta1, c.beta2))}

    # ------------------------------------------------------------------ the pieces of the ELBO
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) in [-1, 1] -> mu, logvar of q(z|x), fp32 (B, z_dim) each."""
        with self.autocast(x.device.type):
            mu, logvar = self.encoder(x)
        return mu.float(), logvar.float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim) -> decoder output (B, C, H, W), fp32: logits (bernoulli) or means (gaussian)."""
        with self.autocast(z.device.type):
            out = self.decoder(z)
        return out.float()

    def log_likelihood(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image, in nats, from the decoder output `out` = decode(z)."""
        if self.likelihood == "bernoulli":
            return bernoulli_log_likelihood(x, out)
        return discretized_gaussian_log_likelihood(x, out, self.log_sigma)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> the mean image in [-1, 1]."""
        return torch.sigmoid(out) * 2 - 1 if self.likelihood == "bernoulli" else out.clamp(-1, 1)

    def reparameterize(self, mu, logvar, generator=None):
        """z = mu + sigma * eps, eps ~ N(0, I) from `generator` (K&W section 2.4)."""
        eps = randn(*mu.shape, generator=generator, device=mu.device)  # this rank's rows (distributed.py)
        return mu + torch.exp(0.5 * logvar) * eps

    def terms(self, x: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(recon = -log p(x|z), KL) per image in nats, one reparameterised z per image."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, generator)
        recon = -self.log_likelihood(x, self.decode(z))
        return recon, kl_normal(mu, logvar)

    # ------------------------------------------------------------------ the model contract
    def train_step(self, batches, opt, generator=None) -> dict[str, torch.Tensor]:
        x, _ = next(batches)                           # x: (B, C, H, W) in [-1, 1]
        if self.config.perturb:                        # a background model (anomaly --method ratio)
            x = perturb(x, self.config.perturb, generator)
        recon, kl = self.terms(x, generator)
        loss = (recon + self.config.beta * kl).mean()  # -ELBO when beta = 1
        update(opt["vae"], loss, "VAE loss")
        return {"loss": loss.detach(), "recon": recon.detach().mean(), "kl": kl.detach().mean()}

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, generator=None, samples: int = 1) -> torch.Tensor:
        """Per-image ELBO (B,) in nats (beta = 1: the bound on log p(x)), averaged over `samples`
        draws of z; x float in [-1, 1]. Evaluated in eval mode."""
        with eval_mode(self):
            recon, kl = zip(*(self.terms(x, generator) for _ in range(samples)))
        return -(torch.stack(recon).mean(0) + kl[0])   # the KL does not depend on the draw

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1] -> decoder mean at the posterior mean z = mu(x), same shape/range."""
        with eval_mode(self):
            return self.mean(self.decode(self.encode(x)[0]))

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @torch.no_grad()
    def generate(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """Decoder means (n, C, H, W) in [-1, 1] at the latents z (n, z_dim); y is ignored."""
        with eval_mode(self):
            return self.mean(self.decode(z.to(next(self.parameters()).device)))

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """n decoder means (n, C, H, W) in [-1, 1] at z ~ N(0, I) drawn from `generator`."""
        return self.generate(torch.randn(check_count(n, self.shape), self.config.z_dim, generator=generator))


@MODELS.register("vae")
@dataclass
class VAEConfig:
    """Convolutional variational autoencoder (Kingma & Welling 2014; beta-VAE, Higgins et al. 2017)
    for 28, 32, 64 or 128 px images, grey or RGB."""
    z_dim: int = opt(32, "latent size", min=1)
    nf: int = opt(32, "channels of the encoder's first block (doubling per block)", min=1)
    max_ch: int = opt(256, "cap on the channels of any block", min=1)
    likelihood: str = opt("auto", "p(x|z): bernoulli (BCE on (x+1)/2), gaussian (discretised, "
                          "learned sigma) or auto (bernoulli for grey images <= 28 px)",
                          choices=("auto", "bernoulli", "gaussian"))
    sigma_init: float = opt(0.1, "initial sigma of the gaussian likelihood, in [-1, 1] units", min=1e-4)
    perturb: float = opt(0.0, "train on inputs with this fraction of pixels set to random grey "
                         "levels (Ren et al. 2019's background model for anomaly --method ratio)",
                         min=0, max=1)
    beta: float = opt(1.0, "weight of the KL term (beta-VAE, Higgins et al. 2017; 1: the ELBO)", min=0)
    lr: float = opt(1e-3, "Adam learning rate", min=0)
    beta1: float = opt(0.9, "Adam beta1", min=0, max=1)
    beta2: float = opt(0.999, "Adam beta2", min=0, max=1)
    batch_size: int = opt(64, "images per batch", min=1)
    steps: int = opt(5000, "default run length in steps when --max-steps is not given", min=1)

    presets = {"tiny": dict(nf=4, max_ch=8, z_dim=4, batch_size=8, steps=4)}

    def build(self, shape, num_classes=0) -> VAE:
        C, H, W = shape
        if H != W:
            raise UsageError(f"vae needs square images (pass --image-size), got {H}x{W}")
        if self.likelihood == "auto":  # resolved once; the run records the choice
            self.likelihood = "bernoulli" if C == 1 and H <= 28 else "gaussian"
        return VAE(self, shape, num_classes)
