"""DCGAN: Radford, Metz & Chintala 2015, "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks".

The paper's architecture rules: strided (transposed) convolutions instead of pooling, batch norm in G
(not on its output), ReLU in G with tanh output, LeakyReLU(0.2) in D, Adam(2e-4, beta1=0.5).
G starts from a 7x7 map for 28 px images (MNIST) and a 4x4 map for 32/64/128 px, doubling the size
per block; D mirrors it and ends in one logit. The objective and the update order are the shared
GAN step in gan.py.

Departures from the paper, each measured (README): Adam beta1 0 instead of 0.5 with the hinge loss
(session 8, below); batch 32 instead of 128 and a narrower G (ngf 24), because at a fixed CPU time
more, cheaper steps win; an EMA of G's weights for sampling (`ema`, the shared GAN default; measured
on mnist-5k at 2,372 steps: 0.65 of samples classified with >= 0.9 confidence from G_ema vs 0.60
from G, see README), and D without batch norm (`d_norm`, off by default: with it D won early,
D(G(z)) ~ 0.09 at step 500; its final quality is not measured yet).

The recipe is tuned for a 120 s budget on 2 cores of an AVX2-only CPU in fp32 (no fast bf16 there):
a narrower D (ndf 32) and the hinge loss at Adam 1e-3, where the paper's recipe (ndf 64,
non-saturating, 2e-4) needed ~11,000 steps. Measured on mnist-5k, fp32, oneDNN/ATen limited to AVX2,
1 thread, seed 0, 2,000 samples (seed 1) scored by the shipped classifier, share >= 0.9 confident:
  ndf 64, nonsat. 2e-4 (old):  ~0.64 at 4,000 steps (README); 0.52 after 240 s on 2 threads
  ndf 32, nonsat. 2e-4:        0.49 / 0.55 / 0.60 / 0.63 at 1,000 / 2,000 / 2,500 / 3,000 steps
  ndf 32, hinge 1e-3 (chosen): 0.53 / 0.65 / 0.68 / 0.71
  ndf 32, lsgan 1e-3:          0.62 / 0.66 / 0.69 at 1,000 / 2,000 / 2,500 steps
  ndf 32, lsgan 2e-3:          0.59 / 0.63 at 1,000 / 1,500, then collapsed to one class at 2,000
lsgan 1e-3 is as good at 2,500 steps and better early, but its collapse at twice the learning rate
left too little margin for the longer runs a fast-bf16 CPU makes in the same time; hinge is also
the MLP GAN's choice for the same reason.
Steps per second (same process, interleaved, 1 thread): ndf 32 1.45x ndf 64 (D's 64->128 conv was
half of the step); cheaper variants did not win at equal time (lsgan 1e-3 unless named): ngf 24
(1.4x the steps/s) 0.69 at 3,500 steps, G ending in its transposed conv instead of a 3x3 conv (1.5x)
0.68 at 4,000, batch 16 with hinge 1e-3 (2.1x) 0.70 at 4,000-5,000, all ~ ngf 32 batch 32 at 2,500.
Sampling from G instead of G_ema: 0.71 vs 0.71 (hinge, 3,000 steps), 0.69 vs 0.69 (lsgan, 2,500).
The latent size (session 6; 2,750 steps, the rest as above; genlab's classifier / an independent
MNIST MLP): z_dim 100 (the paper's) 0.68 / 0.66 (seed 0), 0.67 / 0.64 (seed 1); 32: 0.70 / 0.69,
0.72 / 0.69; **16 (chosen): 0.75 / 0.73, 0.76 / 0.73**; 8: 0.75 / 0.74 (seed 0). MNIST's digits
lie near a manifold of ~7-13 dimensions (Pope et al. 2021, "The Intrinsic Dimension of Images"), and
with fewer unused latent directions G learns the mapping in fewer steps (our reading, not tested);
16 rather than 8 keeps room for the variety of strokes (8 was no better here). Dropped at 2,750
steps (seed 0, z_dim 100): EMA decay 0.99 (0.68 / 0.66), Adam beta2 0.99 (0.65 / 0.65), D at 2e-3
(0.71 / 0.66), both at 2e-3 (0.69 / 0.65), Adam (0, 0.9) as in SAGAN (0.70 / 0.68); BN statistics
recomputed for G_ema ("standing statistics", BigGAN) 0.76 / 0.73 vs 0.78 / 0.74 at 6,000 steps;
flushing denormals changed no step time.
Session 7, with z_dim 16, at the steps each variant makes in 120 s on 2 AVX2 threads (measured:
ngf 32 ~20 steps/s, ngf 24 1.35x, ngf 16 1.75x; screened at 1 thread, 2,300 steps for ngf 32), share
>= 0.9 confident by genlab's classifier / the independent MLP, seeds 0-3 (seeds 0-1 unless 4 given):
  ngf 32 (old), 2,300 steps: 0.722/0.703, 0.738/0.712, 0.713/0.717, 0.698/0.669; mean 0.718/0.700
  ngf 24 (chosen), 3,200:    0.750/0.712, 0.731/0.722, 0.738/0.725, 0.749/0.707; mean 0.742/0.717
  ngf 16, 4,000 steps:       0.727/0.709, 0.728/0.719
  dropped at 2,300 steps: lsgan 0.692/0.686, 0.713/0.687; G at Adam 2e-3 0.719/0.685, 0.695/0.655;
  spectral norm in D (`--sn`) 0.624/0.627, 0.669/0.645; an EMA whose horizon grows with the run
  (1 - beta = 1/(f n + 1), f 0.25 / 0.5 / 1, vs ~n/9 now) within +-0.02 at 2,000-2,750 steps;
  PyTorch's default initialisation for D instead of N(0, 0.02) 0.710/0.677, 0.705/0.661.
Session 8, ngf 24 at its 3,200 steps (AVX2, 1 thread), seeds 0-3 unless fewer given, share >= 0.9
confident by genlab's classifier / the independent MLP (/ an independent CNN where given):
  Adam (0.5, 0.999), old: 0.750/0.712, 0.731/0.722, 0.738/0.725, 0.749/0.707; mean 0.742/0.717, CNN 0.725
  Adam (0, 0.999), chosen: 0.763/0.731, 0.768/0.732, 0.768/0.745, 0.766/0.742; mean 0.766/0.738, CNN 0.754
  Adam (0, 0.99):          0.789/0.749, 0.768/0.750, 0.762/0.748, 0.742/0.724; mean 0.765/0.743 (as good)
  Adam (0, 0.9), SAGAN's:  0.758/0.731, 0.760/0.728
  dropped (Adam (0.5, 0.999), seeds 0/1): a linear learning-rate decay to 0 over the whole run 0.690/0.669
  (seed 0), over its second half 0.717/0.697 (seed 0); ndf 24 at its 3,650 steps 0.743/0.698,
  0.726/0.714; DiffAugment translation (Zhao et al. 2020) 0.667/0.582, 0.699/0.619; Adam 1.4e-3 for
  both nets 0.740/0.714, 0.756/0.737 (mixed).
With native bf16 (1 thread) the ngf 32 recipe scores 0.49 / 0.66 / 0.70 / 0.72 / 0.74 / 0.75 at
1,000 / 2,000 / 3,000 / 4,000 / 5,000 / 6,000 steps, 10/10 classes throughout: stable for the longer
runs a fast-bf16 CPU makes in 120 s, and above the old recipe (0.64 at 4,000, 0.71 at 11,440; README).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn

from ..config import opt
from ..registry import UsageError
from .base import MODELS
from .gan import GAN, GANConfig


def start_size(size: int) -> tuple[int, int]:
    """(first feature-map size, number of doubling blocks) for a square image of side `size`."""
    for s0 in (4, 7):
        k = math.log2(size / s0)
        if k >= 1 and k.is_integer():
            return s0, int(k)
    raise UsageError(f"dcgan needs --image-size 4*2^k or 7*2^k (28, 32, 64, 128), got {size}")


class DCGenerator(nn.Module):
    def __init__(self, z_dim: int, shape, ngf: int = 64, num_classes: int = 0):
        super().__init__()
        C, H, W = shape
        s0, k = start_size(H)
        ch = [ngf * 2 ** i for i in reversed(range(k))]    # e.g. 28 px: [128, 64]
        self.s0, self.ch0 = s0, ch[0] * 2
        self.project = nn.Sequential(                        # z -> (B, ch0, s0, s0)
            nn.Linear(z_dim, self.ch0 * s0 * s0, bias=False), nn.BatchNorm1d(self.ch0 * s0 * s0),
            nn.ReLU(True))
        blocks, c_in = [], self.ch0
        for c in ch:
            blocks += [nn.ConvTranspose2d(c_in, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
            c_in = c
        blocks += [nn.Conv2d(c_in, C, 3, 1, 1), nn.Tanh()]   # output layer: no BN (Radford et al.)
        self.net = nn.Sequential(*blocks)

    def forward(self, z, y=None):                            # z: (B, z_dim) -> (B, C, H, W) in [-1, 1]
        return self.net(self.project(z).view(len(z), self.ch0, self.s0, self.s0))


class DCDiscriminator(nn.Module):
    def __init__(self, shape, ndf: int = 64, norm: bool = False):
        super().__init__()
        C, H, W = shape
        s0, k = start_size(H)
        layers, c_in = [], C
        for i in range(k):
            c = ndf * 2 ** i
            layers += [nn.Conv2d(c_in, c, 4, 2, 1, bias=not (norm and i > 0))]
            if norm and i > 0:                               # no BN on D's input layer (Radford et al.)
                layers += [nn.BatchNorm2d(c)]
            layers += [nn.LeakyReLU(0.2, True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * s0 * s0, 1)

    def phi(self, x, y=None):                                # x -> features (B, c * s0 * s0)
        return self.features(x).flatten(1)

    def forward(self, x, y=None):                            # x: (B, C, H, W) -> logits (B,)
        return self.head(self.phi(x)).squeeze(1)


def init_weights(m: nn.Module):
    """N(0, 0.02) weights, BN scale N(1, 0.02) (Radford et al. 2015, section 4)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@MODELS.register("dcgan")
@dataclass
class DCGANConfig(GANConfig):
    """Convolutional GAN (Radford et al. 2015) for 28, 32, 64 or 128 px images."""
    # ngf 24 (session 7): 1.35x the steps/s of ngf 32 (2 threads, AVX2, fp32) and, at the steps each
    # makes in the same time (3,200 vs 2,300), more confident samples on 4 seeds of 4: 0.742 / 0.717
    # (genlab's classifier / an independent MLP) vs 0.718 / 0.700 (class docstring). ngf 32 had
    # replaced the paper's 64 for the same reason (240 s, 1 thread: 0.58 vs 0.51 confident; README)
    # z_dim 16: 0.75-0.76 of samples confident at 2,750 steps vs 0.67-0.68 at the paper's 100 (two
    # seeds each, AVX2, fp32, 1 thread; class docstring)
    z_dim: int = opt(16, "latent size", min=1)
    ngf: int = opt(24, "generator width (channels of its last block)", min=1)
    # ndf 32: D's second conv (64 -> 128 channels at 7x7) cost as much as all of G; at 32 the step is
    # 1.45x faster (1 thread, fp32, AVX2) and quality per step is unchanged (0.63 at 3,000 steps with
    # the old 2e-4 recipe vs ~0.64 at 4,000 for ndf 64)
    ndf: int = opt(32, "discriminator width (channels of its first block)", min=1)
    d_norm: bool = opt(False, "batch norm in D's hidden blocks (the paper's choice)")
    # batch 32: nearly the quality per step of 64 at ~0.55x the time per step, so better at a fixed wall
    # time (screen at equal time, 1 thread: 0.68 vs 0.655 confident; 240 s on 2 idle cores: 11,440 steps
    # -> 0.71 vs 6,852 steps at batch 64 -> 0.68; batch 16 no better than 32 and less balanced; README)
    batch_size: int = opt(32, "images per batch", min=1)
    # hinge at Adam 1e-3 (both nets): more quality per step than the non-saturating loss at 2e-4
    # (0.65 vs 0.55 confident at 2,000 steps, 0.71 vs 0.63 at 3,000); lsgan 1e-3 as good (0.69 at
    # 2,500) but collapsed at 2e-3, so hinge (class docstring)
    loss: str = opt("hinge", "GAN objective (genlab list shows them)")
    lr_g: float = opt(1e-3, "generator Adam learning rate", min=0)
    lr_d: float = opt(1e-3, "discriminator Adam learning rate", min=0)
    # beta1 0 with hinge (session 8; as SAGAN, BigGAN and StyleGAN2 use): at the 3,200 steps of 120 s
    # on 2 AVX2 threads, more confident samples on 4 seeds of 4 by all three classifiers (genlab's /
    # independent MLP / independent CNN, means 0.766 / 0.738 / 0.754 vs 0.742 / 0.717 / 0.725 at the
    # paper's 0.5). It was screened with hinge only: lsgan at beta1 0 collapsed on the AVX2 kind (slow
    # test, 3,000 steps: 6 classes, 0.28 confident; session 9), so the other losses keep the paper's
    # 0.5, the value they were validated with (tests/test_learning.py)
    beta1: float | None = opt(None, "Adam beta1 (default: 0 with the hinge loss, no momentum as in "
                              "SAGAN/BigGAN/StyleGAN2; 0.5, the paper's, with the other losses)",
                              min=0, max=1)
    # 6,000 steps: hinge 1e-3 kept improving and stayed stable to 6,000 with native bf16 (0.75), so a
    # time-limited run (--max-seconds, `make run`) on a fast CPU is not cut short; on an AVX2 CPU in
    # fp32 ngf 24 runs ~26-31 steps/s on 2 threads (6,000 steps, 0.81, in 200 s; README)
    steps: int = opt(6000, "default run length in steps (about 3.5 min on 2 cores in fp32 on an "
                           "AVX2-only CPU)", min=1)

    presets = {"tiny": dict(ngf=4, ndf=4, z_dim=8, batch_size=8, steps=4)}

    def validate(self):
        super().validate()
        if self.beta1 is None:  # resolved here, so the run's saved config holds the value used
            self.beta1 = 0.0 if self.loss == "hinge" else 0.5

    def build(self, shape, num_classes=0) -> GAN:
        G = DCGenerator(self.z_dim, shape, self.ngf)
        D = DCDiscriminator(shape, self.ndf, self.d_norm)
        G.apply(init_weights), D.apply(init_weights)
        return GAN(self, G, D, shape)
