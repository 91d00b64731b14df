"""GAN objectives as pure functions of discriminator logits, paired in one table.

`d_<name>(real_logits, fake_logits)` is what D minimises, `g_<name>(fake_logits)` what G minimises;
logits are (B,) float, D(x) = sigmoid(logit) for the logistic losses. Penalties are separate functions.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from .distributed import rand
from .registry import Registry


# log sigmoid(t) = -softplus(-t) and log(1 - sigmoid(t)) = -softplus(t): the stable forms of the
# article's log D(x) and log(1 - D(G(z))).

def d_minimax(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """L_D = -E[log D(x)] - E[log(1 - D(G(z)))]   (Goodfellow et al. 2014, eq. 1; the article's L_D)"""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_minimax(fake: torch.Tensor) -> torch.Tensor:
    """L_G = E[log(1 - D(G(z)))]   (the article's L_G; saturates when D wins early)"""
    return -F.softplus(fake).mean()


def g_nonsaturating(fake: torch.Tensor) -> torch.Tensor:
    """L_G = -E[log D(G(z))]   (Goodfellow et al. 2014, section 3: same fixed point, strong early gradients)"""
    return F.softplus(-fake).mean()


def d_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """L_D = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]   (Lim & Ye 2017; Miyato et al. 2018)"""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def g_hinge(fake: torch.Tensor) -> torch.Tensor:
    """L_G = -E[D(G(z))]"""
    return -fake.mean()


def d_lsgan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """L_D = 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]   (Mao et al. 2017, a=0, b=c=1)"""
    return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake ** 2).mean()


def g_lsgan(fake: torch.Tensor) -> torch.Tensor:
    """L_G = 1/2 E[(D(G(z)) - 1)^2]"""
    return 0.5 * ((fake - 1) ** 2).mean()


def d_wgan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """L_D = E[D(G(z))] - E[D(x)]   (Arjovsky et al. 2017; with the gradient penalty, Gulrajani et al. 2017)"""
    return fake.mean() - real.mean()


def g_wgan(fake: torch.Tensor) -> torch.Tensor:
    """L_G = -E[D(G(z))]"""
    return -fake.mean()


def gradient_penalty(D: Callable, x_real: torch.Tensor, x_fake: torch.Tensor,
                     y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat uniformly between real and fake
    (Gulrajani et al. 2017, eq. 3; the weight lambda = 10 is applied by the caller)."""
    eps = rand(len(x_real), *([1] * (x_real.dim() - 1)), generator=generator,
               device=x_real.device)  # this rank's rows under data-parallel training (distributed.py)
    x_hat = (eps * x_real + (1 - eps) * x_fake.detach()).requires_grad_(True)
    out = D(x_hat, y)
    (grad,) = torch.autograd.grad(out.float().sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


class GANLoss(NamedTuple):
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]
    gp: float = 0.0  # gradient-penalty weight lambda this loss is defined with


LOSSES = Registry("loss")
LOSSES.update({
    "minimax": GANLoss(d_minimax, g_minimax),
    "nonsaturating": GANLoss(d_minimax, g_nonsaturating),
    "hinge": GANLoss(d_hinge, g_hinge),
    "lsgan": GANLoss(d_lsgan, g_lsgan),
    "wgan-gp": GANLoss(d_wgan, g_wgan, gp=10.0),
})
