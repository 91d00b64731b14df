"""Latent walks. For Gaussian latents z ~ N(0, I) the straight line between two samples passes through
the low-norm middle that the prior almost never produces (norms concentrate near sqrt(d)); spherical
interpolation keeps the walk on the shell where samples live (White 2016, "Sampling Generative
Networks", arXiv:1609.04468; Shoemake 1985 for slerp itself)."""
from __future__ import annotations

import torch


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation. z0, z1: (..., d); t: (s,) in [0, 1] -> (s, ..., d)."""
    t = t.reshape(-1, *([1] * z0.dim())).to(z0)
    return (1 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation along the last dimension. z0, z1: (..., d); t: (s,) in [0, 1] ->
    (s, ..., d). sin((1-t)w)/sin(w) z0 + sin(tw)/sin(w) z1, w the angle between z0 and z1; falls back
    to lerp where the two are (anti)parallel and sin(w) ~ 0."""
    t = t.reshape(-1, *([1] * z0.dim())).to(z0)
    cos = (torch.nn.functional.normalize(z0, dim=-1, eps=eps)
           * torch.nn.functional.normalize(z1, dim=-1, eps=eps)).sum(-1, keepdim=True).clamp(-1, 1)
    w = torch.acos(cos)
    sin = torch.sin(w)
    s = torch.where(sin.abs() > eps, torch.sin((1 - t) * w) / sin.clamp_min(eps), 1 - t)
    e = torch.where(sin.abs() > eps, torch.sin(t * w) / sin.clamp_min(eps), t)
    return s * z0 + e * z1
