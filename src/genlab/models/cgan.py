"""Conditional GAN: Mirza & Osindero 2014, "Conditional Generative Adversarial Nets".

Both players see the class label y:
    min_G max_D  E_{x,y}[log D(x, y)] + E_{z,y}[log(1 - D(G(z, y), y))]                      (eq. 2)
G gets a learned label embedding concatenated to z; D is conditioned in one of two ways (`d_cond`):
  * "concat":     the one-hot label as K constant feature maps concatenated to the image (the
                  paper's "y fed into both networks as an additional input layer");
  * "projection": D(x, y) = psi(phi(x)) + <embed(y), phi(x)>  (Miyato & Koyama 2018, eq. 3),
                  an inner product between the label embedding and D's features.
The networks are DCGAN's (Radford et al. 2015, dcgan.py); the objective and the update order are
the shared GAN step in gan.py, which passes each real batch's labels to G and D.

Recipe measured on mnist-5k (README, "Results"): projection beats concat on label accuracy of the
samples (the shipped MNIST classifier agrees with the requested label); ngf 32 and batch 32 (the
DCGAN's until session 7, which moved it to ngf 24 at z_dim 16; the cGAN was not re-screened);
and the mode-seeking term of Mao et al. 2019 (`ms`, in gan.py), without which G ignores z and draws
one image per label whatever the loss or D (measured: projection, concat, hinge all collapse).

Recipe for CPUs without native bf16 (issue 9; every field is set in CGANConfig itself, not inherited
from GANConfig): hinge loss (Lim & Ye 2017; the usual partner of a projection D), Adam 1e-3 / 1e-3
(beta1 0.5) and D width ndf 32, measured together (no ablation of the three yet). On full MNIST, fp32
under AVX2 emulation (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 on a Zen 4), seed 0, 1 thread,
2,000 samples, labels i % 10; "acc" = share classified as the requested label by genlab's classifier,
"mlp" = the same by an independent MLP (784-512-256-10, 97.6% on the MNIST test set):
  * old recipe (non-saturating, Adam 2e-4 / 2e-4, ndf 64): ~1,900 steps in 240 s on 2 threads, 60%;
    on a fast-bf16 host 97% only after 5,770 steps;
  * hinge, Adam 1e-3 / 1e-3, ndf 32: acc / mlp at 500 steps 84.3% / 85.0%, 1,000: 96.8 / 92.7,
    1,500: 96.4 / 91.8, 2,000: 96.6 / 92.6, 2,500: 95.5 / 91.0, 3,000: 96.8 / 93.5; 10/10 classes at
    every checkpoint, confident 0.94-0.95; at 3,000 steps FD 8.2, precision 0.71, recall 0.86 (2,000
    samples vs MNIST test), so mode seeking still keeps z in use at the higher learning rate;
  * speed, 1 thread on the shared machine, configs timed alternately in one process: fp32 AVX2, best
    of 2 x 10 steps (heavy load) old recipe 0.377 s a step, ndf 32 0.241 s (1.6x the steps per
    second); best of 3 x 5 steps (lighter load) 0.152 vs 0.113 s (1.35x); native bf16 (Zen 4) 0.098
    vs 0.067 s (1.46x). G dominates the rest: the mode-seeking term's second G pass costs 40% of a
    step (ms 0: 0.143 s vs 0.241), but without it G draws one image per label, so it stays.
`genlab train cgan --data mnist --data-dir ... --max-seconds 240 --threads 1` (AVX2 emulation, load 3-5
on the 2 cores): 1,846 steps, 97.0% / 92.1% the asked digit, 10/10 classes, confident 0.95.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import opt
from ..registry import UsageError
from .base import MODELS, embed_label, project, projection_embedding
from .dcgan import DCDiscriminator, DCGenerator, init_weights, start_size
from .gan import GAN, GANConfig


class CondGenerator(DCGenerator):
    """DCGAN's G on [z, embed(y)] (Mirza & Osindero 2014, section 4.1)."""

    def __init__(self, z_dim: int, shape, ngf: int, num_classes: int, embed_dim: int):
        super().__init__(z_dim + embed_dim, shape, ngf)
        self.embed = nn.Embedding(num_classes, embed_dim)

    def forward(self, z, y):     # z: (B, z_dim), y: (B,) or soft (B, K) -> (B, C, H, W) in [-1, 1]
        return super().forward(torch.cat([z, embed_label(self.embed, y).to(z.dtype)], 1))


class CondDiscriminator(nn.Module):
    """DCGAN's D (its conv features phi and linear head psi) conditioned on y by `cond`:
    "concat": D([x, one_hot(y) as K maps]); "projection": psi(h) + <embed(y), h>, h = phi(x) flattened.
    `mbstd` appends the minibatch standard deviation as one more feature map (Karras et al. 2018,
    section 3), so D can see a batch of near-identical fakes."""

    def __init__(self, shape, ndf: int, num_classes: int, cond: str = "projection",
                 norm: bool = False, mbstd: bool = False):
        super().__init__()
        C, H, W = shape
        self.cond, self.num_classes, self.mbstd = cond, num_classes, mbstd
        base = DCDiscriminator((C + num_classes if cond == "concat" else C, H, W), ndf, norm)
        s0, _ = start_size(H)
        self.features = base.features                               # x -> (B, c, s0, s0)
        n = base.head.in_features + (s0 * s0 if mbstd else 0)
        self.head = nn.Linear(n, 1)
        if cond == "projection":
            self.embed = projection_embedding(num_classes, n)

    def phi(self, x, y):                             # -> (B, n0) per-image features (no mbstd)
        if self.cond == "concat":
            maps = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, maps.expand(-1, -1, *x.shape[2:])], 1)
        return self.features(x).flatten(1)

    def forward(self, x, y):                         # x: (B, C, H, W) in [-1, 1], y: (B,) -> logits (B,)
        if self.cond == "concat":
            maps = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]   # (B, K, 1, 1)
            x = torch.cat([x, maps.expand(-1, -1, *x.shape[2:])], 1)               # (B, C + K, H, W)
        h = self.features(x)                                         # (B, c, s0, s0)
        if self.mbstd:
            sd = h.float().std(0, unbiased=False).mean(0).to(h.dtype)  # (s0, s0)
            h = torch.cat([h, sd.expand(len(h), 1, *sd.shape)], 1)   # (B, c + 1, s0, s0)
        h = h.flatten(1)                                             # (B, n)
        logit = self.head(h).squeeze(1)
        if self.cond == "projection":                                # Miyato & Koyama 2018, eq. 3
            logit = project(logit, self.embed, y, h)
        return logit


@MODELS.register("cgan")
@dataclass
class CGANConfig(GANConfig):
    """Label-conditioned DCGAN (Mirza & Osindero 2014); D by concatenation or projection."""
    # The whole recipe is set here (not inherited from GANConfig / dcgan), measured as the docstring says.
    z_dim: int = opt(100, "latent size", min=1)
    ngf: int = opt(32, "generator width (channels of its last block)", min=1)
    # ndf 32 (was 64): 1.6x the steps per second in fp32 and 96.8% at 1,000 steps with hinge + 1e-3
    ndf: int = opt(32, "discriminator width (channels of its first block)", min=1)
    embed_dim: int = opt(32, "size of G's label embedding, concatenated to z", min=1)
    d_cond: str = opt("projection", "how D sees the label: projection (Miyato & Koyama 2018) or "
                      "concat (one-hot maps, Mirza & Osindero 2014)", choices=("projection", "concat"))
    d_norm: bool = opt(False, "batch norm in D's hidden blocks")
    mbstd: bool = opt(True, "minibatch standard deviation feature in D (Karras et al. 2018)")
    # hinge + Adam 1e-3 (was non-saturating + 2e-4): 96-97% of samples the asked class from 1,000 steps
    # on (old recipe: 60% at ~1,900 steps, 97% only at 5,770), stable to 3,000 steps (docstring)
    loss: str = opt("hinge", "GAN objective (genlab list shows them)")
    lr_g: float = opt(1e-3, "generator Adam learning rate", min=0)
    lr_d: float = opt(1e-3, "discriminator Adam learning rate", min=0)
    beta1: float = opt(0.5, "Adam beta1 (0.5: Radford et al. 2015)", min=0, max=1)
    beta2: float = opt(0.999, "Adam beta2", min=0, max=1)
    n_critic: int = opt(1, "discriminator updates per generator step", min=1)
    ema: float = opt(0.999, "decay of the EMA of G's weights used for sampling (0: off)", min=0, max=0.99999)
    sn: bool = opt(False, "spectral normalisation on every layer of D (Miyato et al. 2018)")
    # Without the mode-seeking term G ignores z and draws one image per label (mnist-5k, 240 s: 98.5% of
    # samples the asked class but recall 0.00, FD 306); with it, recall 0.78, FD 13.6 (README); with
    # hinge + 1e-3 on MNIST, recall 0.86, FD 8.2 at 3,000 steps. It costs 40% of a step; it stays.
    ms: float = opt(1.0, "weight of the mode-seeking term in G's loss (Mao et al. 2019; 0: off)", min=0)
    batch_size: int = opt(32, "images per batch (32: more steps per second, as in dcgan)", min=1)
    # label accuracy is flat from 1,000 steps on; 3,000 is ~4 min in fp32 on 2 AVX2 cores, less with bf16.
    # Longer still pays for synthetic training data (README, "Data augmentation"): /work/runs/cgan
    # resumed, 2,000 samples vs MNIST test, 3,000 / 6,000 / 10,000 steps: FD 8.86 / 6.21 / 4.30,
    # recall 0.85 / 0.86 / 0.86, label accuracy 0.970 / 0.975 / 0.983; CAS (seed 0) 96.92 / 97.26 / 97.94%
    steps: int = opt(3000, "default run length in steps (about 4 min on 2 AVX2 cores in fp32)", min=1)

    presets = {"tiny": dict(ngf=4, ndf=4, z_dim=8, embed_dim=4, batch_size=8, steps=4)}

    def build(self, shape, num_classes=0) -> GAN:
        if not num_classes:
            raise UsageError("cgan needs labelled data (the class label conditions G and D): use "
                             "--data mnist, mnist-5k, fashion-mnist, an npz with `labels`, or a "
                             "folder with one subfolder per class; for unlabelled data use dcgan")
        G = CondGenerator(self.z_dim, shape, self.ngf, num_classes, self.embed_dim)
        D = CondDiscriminator(shape, self.ndf, num_classes, self.d_cond, self.d_norm, self.mbstd)
        G.apply(init_weights), D.apply(init_weights)
        return GAN(self, G, D, shape, num_classes)
