"""Negative log-likelihood of a VAE by importance sampling: the IWAE bound (Burda, Grosse &
Salakhutdinov 2016, "Importance Weighted Autoencoders", eq. 8), with the encoder q(z|x) as proposal:

    log p(x) >= L_k(x) = log (1/k) sum_{i=1..k} p(x|z_i) p(z_i) / q(z_i|x),   z_i ~ q(z|x)

L_1 is the ELBO; L_k increases with k and tends to log p(x) (Burda et al., theorem 1), so
NLL ~ -L_k is an upper bound on the true NLL, tight for large k (their tables use k = 5000).
The k decoder passes per image are made in chunks of at most `batch` rows, and the log-sum-exp is
accumulated chunk by chunk (float64), so memory is bounded for any k.

Model interface (genlab.models.vae.VAE, or any module with these): `encode(x) -> (mu, logvar)` of a
diagonal Gaussian q(z|x), `decode(z) -> out`, `log_likelihood(x, out) -> (B,)` log p(x|z) in nats,
`likelihood` ("bernoulli" or "gaussian"); the prior is N(0, I).

Protocol for the data (`prepare`): bernoulli models see test images dynamically binarised as in
Burda et al. (section 5.1): pixel ~ Bernoulli(grey / 255), one draw per image from a seeded generator,
as {-1, 1}; gaussian models see the uint8 image as k / 127.5 - 1 and their discretised likelihood
gives log P of the 8-bit image, so bits/dim = NLL / (C * H * W * ln 2).
"""
from __future__ import annotations

import math

import torch

from ..registry import UsageError

LOG_2PI = math.log(2 * math.pi)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor | float = 0.0,
                    logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype)
    return -0.5 * ((z - mu) ** 2 * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def prepare(images_u8: torch.Tensor, likelihood: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> the float inputs the bound is evaluated on (see the module docstring)."""
    x = images_u8.float() / 255.0
    if likelihood == "bernoulli":
        return torch.bernoulli(x, generator=generator) * 2 - 1
    if likelihood == "gaussian":
        return x * 2 - 1
    raise UsageError(f"NLL needs a bernoulli or gaussian likelihood, got {likelihood!r}")


@torch.no_grad()
def iwae_log_likelihood(model, x: torch.Tensor, k: int = 5000, generator: torch.Generator | None = None,
                        batch: int = 2500) -> torch.Tensor:
    """L_k(x) per image (B,) float64 in nats, x float (B, C, H, W) as `prepare` makes it."""
    if k < 1 or batch < 1:
        raise UsageError(f"IWAE needs k >= 1 and batch >= 1 (got k={k}, batch={batch})")
    mu, logvar = (t.double() for t in model.encode(x))
    per_pass = min(k, batch)                    # importance samples per image per decoder pass
    imgs = max(1, batch // per_pass)            # images per decoder pass
    out = torch.empty(len(x), dtype=torch.float64)
    for i in range(0, len(x), imgs):
        xb, mb, lb = x[i:i + imgs], mu[i:i + imgs], logvar[i:i + imgs]
        b, zd = mb.shape
        acc = torch.full((b,), -math.inf, dtype=torch.float64)
        for j in range(0, k, per_pass):
            m = min(per_pass, k - j)
            eps = torch.randn((b, m, zd), generator=generator, dtype=torch.float64)
            z = mb[:, None] + torch.exp(0.5 * lb)[:, None] * eps                 # (b, m, zd)
            dec = model.decode(z.reshape(b * m, zd).to(x.dtype))
            log_px = model.log_likelihood(xb.repeat_interleave(m, 0), dec).double().view(b, m)
            log_w = log_px + log_normal_diag(z) - log_normal_diag(z, mb[:, None], lb[:, None])
            acc = torch.logaddexp(acc, torch.logsumexp(log_w, dim=1))
        out[i:i + b] = acc - math.log(k)
    return out


def nll_report(log_px: torch.Tensor, likelihood: str, dims: int) -> dict:
    """Mean NLL in nats (+ its standard error), and bits/dim for the discretised gaussian."""
    nll = -log_px.double()
    n = len(nll)
    out = {"nll_nats": float(nll.mean()),
           "nll_nats_stderr": float(nll.std() / math.sqrt(n)) if n > 1 else float("nan")}
    if likelihood == "gaussian":
        out["bits_per_dim"] = out["nll_nats"] / (dims * math.log(2))
    return out
