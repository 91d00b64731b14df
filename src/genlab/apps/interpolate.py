"""Latent walks. For Gaussian latents z ~ N(0, I) the straight line between two samples passes through
the low-norm middle that the prior almost never produces (norms concentrate near sqrt(d)); spherical
interpolation keeps the walk on the shell where samples live (White 2016, "Sampling Generative
Networks", arXiv:1609.04468; Shoemake 1985 for slerp itself).

Three walks, each returning frames (steps, rows, C, H, W) in [-1, 1] (rows = independent walks):
  * `walk_random`: between two random latents z0, z1 ~ N(0, I) (any models.Generator; a conditional
    one keeps each row's class fixed), as in Radford et al. 2015 section 6.1 and White 2016;
  * `walk_classes`: z fixed, the class moves from A to B. A models.SoftLabels model (cgan, conditional
    rnngan) walks its label embedding, e(t) = (1 - t) e(A) + t e(B) (Mirza & Osindero 2014 condition G
    on that embedding); any other conditional Generator can only take whole labels, so the walk is
    the class sweep A, A+1, ..., B at fixed z (one frame per class) and says so (`Walk.kind`);
  * `walk_between`: between two real images through the encoder of a models.Autoencoder (the VAE):
    z0 = mu(x0), z1 = mu(x1), frames = decoder means along the path (Kingma & Welling 2014, fig. 4
    shows the decoded latent space; White 2016 walks encoded images the same way).
`save_walk` writes a GIF (one frame per step, the rows side by side) or a PNG grid (rows = walks,
columns = steps), atomically.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import atomic_write
from ..models import Autoencoder, Generator, SoftLabels
from ..registry import UsageError

MAX_STEPS = 128   # frames of one walk
MAX_ROWS = 32     # walks drawn side by side
GIF_MS, GIF_HOLD_MS = 120, 700   # per frame; the two endpoints are held longer so the loop reads


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


PATHS = {"slerp": slerp, "lerp": lerp}


@dataclass
class Walk:
    frames: torch.Tensor   # (steps, rows, C, H, W) in [-1, 1]
    kind: str              # "random", "embedding" (soft labels), "sweep" (whole labels), "between"
    path: str              # "slerp" or "lerp" (the latent path); "labels" for a class sweep
    labels: torch.Tensor | None = None   # (steps,) the class of each frame of a sweep


def check_walk(steps: int, rows: int) -> None:
    if not 2 <= steps <= MAX_STEPS:
        raise UsageError(f"--steps must be in 2..{MAX_STEPS}, got {steps}")
    if not 1 <= rows <= MAX_ROWS:
        raise UsageError(f"--rows must be in 1..{MAX_ROWS}, got {rows}")


def _path(name: str):
    if name not in PATHS:
        raise UsageError(f"unknown latent path {name!r}; use slerp or lerp")
    return PATHS[name]


def _decode(model: Generator, z: torch.Tensor, y=None) -> torch.Tensor:
    """z (steps, rows, d) -> frames (steps, rows, C, H, W) through model.generate."""
    s, r = z.shape[:2]
    x = model.generate(z.flatten(0, 1), None if y is None else y.flatten(0, 1))
    return x.reshape(s, r, *x.shape[1:])


def walk_random(model: Generator, steps: int = 16, rows: int = 1, path: str = "slerp",
                generator: torch.Generator | None = None) -> Walk:
    """`rows` walks of `steps` frames from z0 to z1 ~ N(0, I) (both drawn from `generator`); a
    conditional model draws row r as class r % K all along its walk."""
    check_walk(steps, rows)
    if not isinstance(model, Generator):
        raise UsageError("a latent walk needs a generative model (models.Generator)")
    z0 = torch.randn(rows, model.z_dim, generator=generator)          # (rows, d)
    z1 = torch.randn(rows, model.z_dim, generator=generator)
    z = _path(path)(z0, z1, torch.linspace(0, 1, steps))            # (steps, rows, d)
    y = (torch.arange(rows) % model.num_classes).expand(steps, rows) if model.num_classes else None
    return Walk(_decode(model, z, y), "random", path)


def walk_classes(model: Generator, a: int, b: int, steps: int = 16, rows: int = 1,
                 generator: torch.Generator | None = None) -> Walk:
    """z (rows, d) ~ N(0, I) fixed; the class goes from a to b. SoftLabels models: `steps` frames at
    soft labels w(t) = (1 - t) onehot(a) + t onehot(b) (a straight line between the two label
    embeddings); other conditional Generators: |b - a| + 1 frames, the whole labels a..b."""
    check_walk(steps, rows)
    k = model.num_classes if isinstance(model, Generator) else 0
    if not k:
        raise UsageError("--from-class/--to-class need a conditional model (cgan, rnngan trained on "
                         "labelled data); this one is unconditional: walk between random latents instead")
    for flag, c in (("--from-class", a), ("--to-class", b)):
        if not 0 <= c < k:
            raise UsageError(f"{flag} must be in 0..{k - 1}, got {c}")
    if a == b:
        raise UsageError(f"--from-class and --to-class are both {a}: choose two different classes")
    z = torch.randn(rows, model.z_dim, generator=generator)
    if isinstance(model, SoftLabels):
        eye = torch.eye(k)
        w = lerp(eye[a], eye[b], torch.linspace(0, 1, steps))          # (steps, K), rows sum to 1
        x = model.generate_soft(z.expand(steps, rows, -1).flatten(0, 1),
                                w[:, None].expand(steps, rows, k).flatten(0, 1))
        return Walk(x.reshape(steps, rows, *x.shape[1:]), "embedding", "lerp")
    labels = torch.arange(a, b + (1 if b > a else -1), 1 if b > a else -1)   # (|b - a| + 1,)
    frames = _decode(model, z.expand(len(labels), rows, -1), labels[:, None].expand(-1, rows))
    return Walk(frames, "sweep", "labels", labels)


def walk_between(model: Autoencoder, x0: torch.Tensor, x1: torch.Tensor, steps: int = 16,
                 path: str = "slerp") -> Walk:
    """x0, x1 (rows, C, H, W) in [-1, 1] -> decoder means along the path from mu(x0) to mu(x1)."""
    check_walk(steps, len(x0))
    if not isinstance(model, Autoencoder) or not isinstance(model, Generator):
        raise UsageError("--between walks through an encoder: it needs an autoencoder run (vae); "
                         "for a GAN walk between random latents or classes instead")
    with torch.no_grad():
        mu0, mu1 = model.encode(x0)[0], model.encode(x1)[0]             # (rows, d) each
    return Walk(_decode(model, _path(path)(mu0, mu1, torch.linspace(0, 1, steps))), "between", path)


def grid_image(x: torch.Tensor, nrow: int):
    """x (N, C, H, W) in [-1, 1] -> a PIL image (grey "L" or "RGB"), nrow images a row, 2 px white gaps
    (torchvision's make_grid, as genlab sample's grids)."""
    from PIL import Image
    from torchvision.utils import make_grid
    g = make_grid(x.float(), nrow=nrow, padding=2, pad_value=1.0, normalize=True, value_range=(-1, 1))
    a = (g * 255).round().to(torch.uint8)                                # (3, H', W')
    return Image.fromarray(a[0].numpy(), "L") if x.shape[1] == 1 else \
        Image.fromarray(a.permute(1, 2, 0).numpy(), "RGB")


def save_walk(frames: torch.Tensor, path) -> Path:
    """frames (steps, rows, C, H, W) -> .gif: one frame per step, the rows side by side, looping (the
    endpoints held GIF_HOLD_MS, the rest GIF_MS; Pillow merges consecutive identical frames);
    .png: a grid, one walk per row, steps left to right. Written atomically."""
    path = Path(path)
    steps, rows = frames.shape[:2]
    buf = io.BytesIO()
    if path.suffix == ".gif":
        ims = [grid_image(frames[s], rows) for s in range(steps)]
        ms = [GIF_HOLD_MS if i in (0, steps - 1) else GIF_MS for i in range(steps)]
        ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=ms, loop=0)
    elif path.suffix == ".png":
        grid_image(frames.transpose(0, 1).flatten(0, 1), steps).save(buf, format="PNG")
    else:
        raise UsageError(f"--out must end in .gif (animated) or .png (a grid), got {str(path)!r}")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))
