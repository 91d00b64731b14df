"""RNN-GAN: a recurrent GAN that writes an image one row per time step.

Mogren 2016, "C-RNN-GAN: Continuous recurrent neural networks with adversarial training": G is an
LSTM that emits one element of a sequence per time step, D a bidirectional LSTM that reads the
sequence and averages its per-step decisions. Here the sequence is the image's rows, top to bottom,
as in van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks" (row-by-row
image modelling). The objective is the GAN game of Goodfellow et al. 2014,
    min_G max_D  E_x[log D(x, y)] + E_z[log(1 - D(G(z, y), y))]                             (eq. 1)
optionally conditioned on the class label y (Mirza & Osindero 2014): G sees embed(y) next to z, D
uses a projection (Miyato & Koyama 2018). The update order is the shared GAN step in gan.py.

G: [z, embed(y)] -> initial LSTM state; at step t the input is [z, embed(y), one_hot(t)], the output
row_t = tanh(Linear(h_t)). D: bidirectional LSTM over the rows, logit = mean_t psi(h_t) + projection.
LSTMs (not GRUs): under CPU bf16 autocast torch runs nn.LSTM in bf16 (oneDNN), about 3x faster than
fp32 on one thread on an AMX CPU; nn.GRU stays in fp32 there. Where oneDNN has no bf16 LSTM (AVX2-only
CPUs) D's LSTM runs in fp32 (`precision.lstm`).

Recipe measured on mnist-5k, 1 CPU thread on a shared 2-core machine (project MNIST classifier on
1,000 samples, labels i % 10; FD and recall of 2,000 samples vs the MNIST test set; README):
conditional, hinge loss (Lim & Ye 2017, the usual partner of a projection D), Adam 1e-3 / 1e-3 with
beta1 0.5, batch 64, EMA 0.999, G 256 units, D one bidirectional layer of 256, 3,000 steps
(about 7 min at 1 thread, 0.14-0.22 s a step). Digits need steps: 500 steps draw strokes, 1,000-
2,000 are half-formed or miss a class, 3,000 give 10/10 classes with 0.98-0.99 of samples
classified with >= 0.9 confidence (seeds 0 and 1). Hinge vs the non-saturating loss at 3,000 steps:
confident 0.98 / 0.99 vs 0.99 / 0.99, FD 31.8 / 23.5 vs 30.6 / 47.1 (seeds 0 / 1). A minibatch-std
feature in D raised recall but lost a class or confidence at 2,000 steps, so D has none.

Recipe for CPUs without native bf16 (issue 9; every field is set in RNNGANConfig itself): G 128 units,
D 64 units per direction, batch 32, 6,000 steps. In fp32 the old recipe (G 256, D 256, batch 64) did
0.67 s a step on 2 AVX2 threads, 364 steps in 240 s: 5/10 classes, 21% the asked digit. D's
bidirectional nn.LSTM was two thirds of a step (profile, fp32: mkldnn_rnn_layer forward + backward
66%, G's LSTMCell matmuls most of the rest), and an LSTM costs ~ batch x hidden^2. Measured on
mnist-5k, fp32 under AVX2 emulation (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 on a Zen 4),
seed 0, 1 thread, 2,000 samples, labels i % 10; classes = classes with >= 1% of the samples; "acc" =
share classified as the asked digit by genlab's classifier, "mlp" = by an independent MLP (97.6% on
MNIST test):
  * speed, 1 thread, best of 3 x 5 steps, one process: old recipe 0.401 s a step, G 128 / D 64 /
    batch 32 0.048 s (8.3x; 9.4x and 8.8x in two earlier rounds on the loaded machine), G 128 / D 128
    / batch 32 1.6x the time of D 64; native bf16 (Zen 4): old 0.262 s, new 0.043 s (6.1x);
  * G 128 / D 64 / batch 32 (kept): classes (genlab / mlp) and acc / mlp at 1,000 steps 8 / 10,
    12.5% / 17.8%; 1,500: 10 / 9, 31.4 / 37.5; 2,000: 10 / 10, 35.6 / 42.6; 2,500: 10 / 10, 65.9 / 71.3;
    3,000: 10 / 10, 61.5 / 67.0; 4,000: 10 / 10, 86.3 / 89.6; 5,000: 10 / 10, 90.6 / 93.5; 6,000:
    10 / 10, 92.0 / 93.1 (confident 0.93). 10/10 classes from 1,500 steps, where the old recipe
    still missed classes (1,000-2,000 steps, above);
  * G 128 / D 128 / batch 32 (dropped): better per step (1,000: 27.4%, 1,500: 33.0, 2,000: 44.0,
    2,500: 59.3%, 10/10 classes from 1,500) but 1.6x slower, so worse at equal time.
3,000 steps of the kept recipe took 271 s on 1 AVX2 thread of the shared machine; 6,000 steps (the
default run) take about 7 min there. `genlab train rnngan --data mnist-5k --max-seconds 240 --threads 1`
(AVX2 emulation, load 4-6 on the 2 cores): 3,576 steps, 10/10 classes by both classifiers, 65.1% /
74.4% the asked digit, confident 0.81.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import precision
from ..config import opt
from .base import MODELS, embed_label, project, projection_embedding
from .gan import GAN, GANConfig


class RowGenerator(nn.Module):
    def __init__(self, z_dim: int, shape, hidden: int, num_classes: int = 0, embed_dim: int = 32):
        super().__init__()
        self.shape, self.hidden = tuple(shape), hidden
        C, H, W = shape
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        cond = z_dim + (embed_dim if num_classes else 0)
        self.init_state = nn.Linear(cond, 2 * hidden)                   # (h0, c0) from [z, y]
        self.cell = nn.LSTMCell(cond + C * W + H, hidden)               # [z, y, row_{t-1}, one_hot(t)]
        self.to_row = nn.Linear(hidden, C * W)

    def forward(self, z, y=None):               # z: (B, z_dim), y: (B,) -> (B, C, H, W) in [-1, 1]
        C, H, W = self.shape
        if self.embed is not None:
            z = torch.cat([z, embed_label(self.embed, y).to(z.dtype)], 1)  # y: (B,) or soft (B, K)
        B = len(z)
        h, c = torch.tanh(self.init_state(z)).float().chunk(2, 1)        # 2 x (B, hidden)
        pos = torch.eye(H, device=z.device)                              # one_hot(row index)
        row = torch.full((B, C * W), -1.0, device=z.device)              # a black row before the first
        rows = []
        for t in range(H):                      # autoregressive: row t sees the rows drawn before it
            inp = torch.cat([z.float(), row.float(), pos[t].expand(B, H)], 1)
            h, c = self.cell(inp, (h.float(), c.float()))
            row = torch.tanh(self.to_row(h))                             # (B, C*W) in [-1, 1]
            rows.append(row)
        return torch.stack(rows, 1).view(B, H, C, W).permute(0, 2, 1, 3)  # (B, C, H, W)


class RowDiscriminator(nn.Module):
    def __init__(self, shape, hidden: int, layers: int = 1, num_classes: int = 0):
        super().__init__()
        C, H, W = shape
        self.rnn = nn.LSTM(C * W, hidden, layers, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, 1)
        self.embed = projection_embedding(num_classes, 2 * hidden) if num_classes else None

    def phi(self, x, y=None):                   # x: (B, C, H, W) in [-1, 1] -> features (B, 2*hidden)
        rows = x.permute(0, 2, 1, 3).flatten(2)                          # (B, H, C*W), top to bottom
        out, _ = precision.lstm(self.rnn, rows)                          # (B, H, 2*hidden)
        return F.leaky_relu(out, 0.2).mean(1)                            # per-step features, averaged

    def forward(self, x, y=None):               # x: (B, C, H, W) in [-1, 1] -> logits (B,)
        h = self.phi(x)
        logit = self.head(h).squeeze(1)
        if self.embed is not None:                                       # Miyato & Koyama 2018, eq. 3
            logit = project(logit, self.embed, y, h)
        return logit


@MODELS.register("rnngan")
@dataclass
class RNNGANConfig(GANConfig):
    """Recurrent GAN (Mogren 2016): LSTM G writes rows, bidirectional LSTM D reads them."""
    # The whole recipe is set here (not inherited from GANConfig), measured as the docstring says.
    # G 128 / D 64 / batch 32 (was 256 / 256 / 64): 8.3x the steps per second in fp32 (6.1x in bf16),
    # 10/10 classes from 1,500 steps, 92% the asked digit at 6,000 (docstring)
    hidden_g: int = opt(128, "LSTM units of G", min=1)
    hidden_d: int = opt(64, "LSTM units per direction of D", min=1)
    layers_d: int = opt(1, "LSTM layers of D", min=1)
    embed_dim: int = opt(32, "size of G's label embedding", min=1)
    z_dim: int = opt(100, "latent size", min=1)
    conditional: bool = opt(True, "condition G and D on the class label when the data has labels")
    loss: str = opt("hinge", "GAN objective (genlab list shows them)")
    lr_g: float = opt(1e-3, "generator Adam learning rate", min=0)
    lr_d: float = opt(1e-3, "discriminator Adam learning rate", min=0)
    beta1: float = opt(0.5, "Adam beta1", min=0, max=1)
    beta2: float = opt(0.999, "Adam beta2", min=0, max=1)
    batch_size: int = opt(32, "images per batch", min=1)
    n_critic: int = opt(1, "discriminator updates per generator step", min=1)
    ema: float = opt(0.999, "decay of the EMA of G's weights used for sampling (0: off)", min=0, max=0.99999)
    sn: bool = opt(False, "spectral normalisation on every layer of D (Miyato et al. 2018)")
    ms: float = opt(0.0, "weight of the mode-seeking term in G's loss (Mao et al. 2019; 0: off)", min=0)
    steps: int = opt(6000, "default run length in steps (about 7 min at 1 thread in fp32)", min=1)

    presets = {"tiny": dict(hidden_g=8, hidden_d=8, z_dim=8, embed_dim=4, batch_size=8,
                            steps=4)}

    def build(self, shape, num_classes=0) -> GAN:
        k = num_classes if self.conditional else 0
        G = RowGenerator(self.z_dim, shape, self.hidden_g, k, self.embed_dim)
        D = RowDiscriminator(shape, self.hidden_d, self.layers_d, k)
        return GAN(self, G, D, shape, k)
