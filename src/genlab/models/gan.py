"""The adversarial game every GAN model shares, and the article's MLP GAN.

Goodfellow et al. 2014, "Generative Adversarial Nets": D and G play
    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))]                                    (eq. 1)
One `train_step` = `n_critic` discriminator updates (each on a fresh real batch) then one generator
update, then the optional named steps (EMA). The objective comes from the LOSSES table
(`--loss`), so any GAN model here trains with any loss. Networks take `(z, y)` / `(x, y)` with `y`
the class labels (ignored by unconditional networks) and D returns logits (B,). A D network whose
logit for an image depends on that image alone may set `joint_real_fake = True`: the D update then
calls it once on the real and the fake batch together (d_real_fake).

The `gan` model is the tutorial article's network, exactly: G 100 -> 128 -> 128 -> 784 with
LeakyReLU(0.01) and tanh, D 784 -> 128 -> 1. The article's code trained D on random noise labelled
"real"; here D sees real images, which is the whole difference between noise and digits.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import opt
from ..distributed import randn
from ..guard import update
from ..losses import LOSSES, gradient_penalty
from ..precision import Precision
from ..registry import UsageError
from .base import MODELS, adam, check_count, class_labels, eval_mode


@dataclass
class GANConfig:
    """Shared GAN recipe: objective, optimiser, tricks. Model files subclass it with their networks."""
    z_dim: int = opt(100, "latent size", min=1)
    loss: str = opt("nonsaturating", "GAN objective (genlab list shows them)")
    lr_g: float = opt(2e-4, "generator Adam learning rate", min=0)
    lr_d: float = opt(2e-4, "discriminator Adam learning rate", min=0)
    beta1: float = opt(0.5, "Adam beta1 (0.5: Radford et al. 2015)", min=0, max=1)
    beta2: float = opt(0.999, "Adam beta2", min=0, max=1)
    batch_size: int = opt(64, "images per batch", min=1)
    n_critic: int = opt(1, "discriminator updates per generator step (5 for wgan-gp)", min=1)
    gp: float | None = opt(None, "gradient-penalty weight (default: the loss's own, 10 for wgan-gp)",
                           min=0)
    # 0.999 for every GAN here: sampling from the EMA of G beat G itself on mnist-5k (dcgan, 2,372 steps:
    # 0.65 vs 0.60 of samples confidently classified; README) and it keeps the MLP GAN's classes
    ema: float = opt(0.999, "decay of the EMA of G's weights used for sampling (0: off)", min=0, max=0.99999)
    sn: bool = opt(False, "spectral normalisation on every layer of D (Miyato et al. 2018)")
    ms: float = opt(0.0, "weight of the mode-seeking term in G's loss (Mao et al. 2019; 0: off)", min=0)
    steps: int = opt(3000, "default run length in steps when --max-steps is not given", min=1)

    def validate(self):
        LOSSES[self.loss]  # unknown loss -> UsageError listing the known ones
        if self.loss == "wgan-gp" and self.n_critic == 1:
            self.n_critic = 5  # Gulrajani et al. 2017, Algorithm 1


def spectral_norm_all(net: nn.Module) -> nn.Module:
    for name, m in list(net.named_modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.utils.parametrizations.spectral_norm(m)
    return net


def mode_seeking(x1: torch.Tensor, x2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """1 / (mean|G(z1, y) - G(z2, y)| / mean|z1 - z2| + 1e-5): small when two codes of the same label
    give different images. Mao et al. 2019, "Mode Seeking GANs", eq. 3 (their code's form); it stops a
    conditional G from drawing one image per label and ignoring z."""
    ratio = (x1.float() - x2.float()).abs().mean() / (z1 - z2).abs().mean()
    return 1 / (ratio + 1e-5)


def d_real_fake(D: nn.Module, x: torch.Tensor, x_fake: torch.Tensor, y: torch.Tensor | None,
                joint: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """D's logits (B,) fp32 on the real batch x and the fake batch x_fake (both (B, C, H, W), labels y).
    joint: one call on the 2B images, as BigGAN-PyTorch's G_D does. For a D whose logit for an image
    depends on that image alone (no BatchNorm, no minibatch statistics) it is the same function of
    the weights, computed in one pass with one weight-gradient GEMM over 2B rows instead of two passes
    and a sum of two gradients."""
    if not joint:
        return D(x, y).float(), D(x_fake, y).float()
    out = D(torch.cat([x, x_fake]), None if y is None else torch.cat([y, y])).float()  # (2B,)
    return out[:len(x)], out[len(x):]


@torch.no_grad()
def ema_step(G_ema: nn.Module, G: nn.Module, decay: float, n: torch.Tensor) -> None:
    """theta_ema <- beta theta_ema + (1 - beta) theta, with beta warmed up as min(decay, (1+n)/(10+n))
    so that short runs are not dominated by the initial weights (Karras et al. 2018; Yazici et al. 2019).
    Buffers (BN statistics) are copied."""
    n += 1
    k = n.item()
    beta = min(decay, (1 + k) / (10 + k))
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


class GAN(Precision, nn.Module):
    """G, D and (optionally) G_ema, trained with the objective named by `config.loss`."""
    loss_stats = ("d_loss", "g_loss")  # plotted in losses.png

    def __init__(self, config: GANConfig, G: nn.Module, D: nn.Module, shape, num_classes: int = 0):
        super().__init__()
        self.config, self.shape, self.num_classes = config, tuple(shape), num_classes
        self.G, self.D = G, (spectral_norm_all(D) if config.sn else D)
        self.loss = LOSSES[config.loss]
        self.gp = self.loss.gp if config.gp is None else config.gp
        # a D network that declares it sees the real and the fake batch in one call (d_real_fake)
        self.joint_d = bool(getattr(D, "joint_real_fake", False))
        if config.ema:
            self.G_ema = copy.deepcopy(G).requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        return {"d": adam(self.D.parameters(), c.lr_d, (c.beta1, c.beta2)),
                "g": adam(self.G.parameters(), c.lr_g, (c.beta1, c.beta2))}

    def noise(self, n: int, generator=None, device=None) -> torch.Tensor:
        return randn(n, self.config.z_dim, generator=generator, device=device)  # z ~ N(0, I)

    def train_step(self, batches, opt, generator=None) -> dict[str, torch.Tensor]:
        G, D, loss = self.G, self.D, self.loss
        for _ in range(self.config.n_critic):
            x, y = next(batches)                         # x: (B, C, H, W) in [-1, 1]; y: (B,)
            z = self.noise(len(x), generator, x.device)  # (B, z_dim)
            # 1) discriminator: minimise loss.d(D(x), D(G(z))), i.e. raise D(x), lower D(G(z))
            with self.autocast(x.device.type):
                x_fake = G(z, y)                         # graph kept for the G step below
                real, fake = d_real_fake(D, x, x_fake.detach(), y, self.joint_d)
            d_loss = loss.d(real, fake)
            if self.gp:  # named step: gradient penalty (Gulrajani et al. 2017)
                d_loss = d_loss + self.gp * gradient_penalty(D, x, x_fake, y, generator)
            update(opt["d"], d_loss, "D loss")
        # 2) generator: minimise loss.g(D(G(z))) against the updated D (non-saturating by default)
        D.requires_grad_(False)  # G's update needs dL/dx through D, not D's own weight gradients
        try:
            with self.autocast(x.device.type):
                fake_g = D(x_fake, y).float()
                if self.config.ms:  # a second batch for the mode-seeking step, same labels
                    z2 = self.noise(len(x), generator, x.device)
                    x2 = G(z2, y)
            g_loss = loss.g(fake_g)
            if self.config.ms:  # named step: mode seeking (Mao et al. 2019)
                g_loss = g_loss + self.config.ms * mode_seeking(x_fake, x2, z, z2)
            update(opt["g"], g_loss, "G loss")
        finally:
            D.requires_grad_(True)
        # 3) named step: EMA of G's weights, used by sample()
        if self.config.ema:
            ema_step(self.G_ema, G, self.config.ema, self.ema_updates)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                "D(x)": torch.sigmoid(real.detach()).mean(), "D(G(z))": torch.sigmoid(fake.detach()).mean()}

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    def _G(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """G_ema (or G) at z and y (labels (n,), soft labels (n, K) or None), the run's precision."""
        G = self.G_ema if self.config.ema else self.G
        device = next(G.parameters()).device
        with eval_mode(G), self.autocast(device.type):  # the precision training used (precision.py)
            x = G(z.to(device), None if y is None else y.to(device))
        return x.float().clamp(-1, 1)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images (n, C, H, W) in [-1, 1] for the latents z (n, z_dim) (and class labels y (n,) of a
        conditional model): G_ema when enabled, else G, in eval mode, at the run's precision."""
        if self.num_classes:
            y = class_labels(len(z), self.num_classes, y)
        return self._G(z, y)

    @torch.no_grad()
    def generate_soft(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """models.SoftLabels: like generate, with soft labels w (n, K), rows >= 0 summing to 1: G reads
        the w-weighted sum of its label embeddings (models.base.embed_label)."""
        k = self.num_classes
        if not k:
            raise UsageError("soft labels need a conditional model (this one is unconditional)")
        w = torch.as_tensor(w, dtype=torch.float32)
        if w.shape != (len(z), k) or (w < 0).any() or not torch.allclose(w.sum(1), torch.ones(len(z)), atol=1e-4):
            raise UsageError(f"soft labels must be ({len(z)}, {k}) weights >= 0 with rows summing to 1")
        return self._G(z, w)

    @torch.no_grad()
    def d_features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """models.Discriminator: phi(x) (n, f) fp32, the per-image features D's last linear layer reads
        (without a minibatch-std feature, which depends on the batch), D in eval mode; x (n, C, H, W)
        in [-1, 1]; y (n,) the labels of a conditional model (a concat D reads them)."""
        device = next(self.D.parameters()).device
        if self.num_classes:
            y = class_labels(len(x), self.num_classes, y).to(device)
        with eval_mode(self.D), self.autocast(device.type):
            h = self.D.phi(x.to(device), y)
        return h.float()

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """n images (n, C, H, W) in [-1, 1] at z ~ N(0, I) drawn from `generator` (generate(z, labels));
        conditional models: class i % K unless `labels` are given."""
        return self.generate(self.noise(check_count(n, self.shape), generator), labels)


# ---------------------------------------------------------------- the article's MLP networks
class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, shape, hidden: int = 128):
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.LeakyReLU(0.01),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.01),
            nn.Linear(hidden, math.prod(shape)), nn.Tanh())

    def forward(self, z, y=None):                      # z: (B, z_dim) -> (B, C, H, W) in [-1, 1]
        return self.net(z).view(len(z), *self.shape)


class MLPDiscriminator(nn.Module):
    # real and fake batches in one call (d_real_fake): each logit depends on its image alone, and
    # one call of 2B made the MLP GAN's step 1.03-1.05x faster (2 threads, AVX-512 and AVX2, session
    # 9). DCGAN's D (without BN) gained 1.00-1.03x, within noise; the RNN-GAN's LSTM D lost (0.94-0.96x):
    # both keep two calls, and so do the Ds with BatchNorm or minibatch std (they mix the batch).
    joint_real_fake = True

    def __init__(self, shape, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(math.prod(shape), hidden), nn.LeakyReLU(0.01),
                                 nn.Linear(hidden, 1))

    def phi(self, x, y=None):                          # x -> hidden features (B, hidden)
        return self.net[:-1](x.flatten(1))

    def forward(self, x, y=None):                      # x: (B, C, H, W) -> logits (B,)
        return self.net(x.flatten(1)).squeeze(1)


@MODELS.register("gan")
@dataclass
class MLPGANConfig(GANConfig):
    """The article's MLP GAN (Goodfellow et al. 2014), trained on real images."""
    hidden: int = opt(128, "hidden units of G and D (the article: 128)", min=1)
    # Measured on mnist-5k (README): Adam 2e-4 collapsed to 1-2 classes; 1e-3 with an EMA of G kept all
    # 10 classes on most seeds, but the non-saturating loss still collapsed to one class on seed 0 at 2
    # threads; the hinge loss kept 10/10 classes in all 9 runs tried (seeds 0-3 at 1 thread, 0-4 at 2).
    loss: str = opt("hinge", "GAN objective (genlab list shows them)")
    lr_g: float = opt(1e-3, "generator Adam learning rate", min=0)
    lr_d: float = opt(1e-3, "discriminator Adam learning rate", min=0)
    steps: int = opt(30000, "default run length in steps (about 2 min on 2 cores)", min=1)

    presets = {"tiny": dict(hidden=16, z_dim=8, batch_size=8, steps=4)}

    def build(self, shape, num_classes=0) -> GAN:
        return GAN(self, MLPGenerator(self.z_dim, shape, self.hidden),
                   MLPDiscriminator(shape, self.hidden), shape)
