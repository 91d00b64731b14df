"""Restoration with a trained generative model: inpainting and denoising by a search in its latent space.

Inpainting (Yeh et al. 2017, "Semantic Image Inpainting with Deep Generative Models", CVPR; Bora et al.
2017, "Compressed Sensing using Generative Models", ICML): find the latent z whose image G(z) matches
the known pixels while staying where the prior puts its mass, then keep the known pixels and take the
missing ones from G(z*):

    z* = argmin_z  sum_known (G(z) - x)^2 + lam ||z||^2          (Bora eq. 2; Yeh eq. 3's contextual
    x_hat = m * x + (1 - m) * G(z*)                                 loss, with L2 like Bora)

m: 1 = known pixel, 0 = missing. Yeh's prior term is the discriminator's log(1 - D(G(z))); the Generator
protocol has no D (and a VAE has none), so the prior is Bora's lam ||z||^2, the negative log density
of z ~ N(0, I) up to scale. Read as a MAP estimate with the known pixels seen through N(0, s^2) misfit,
lam = s^2: the default lam 0.1 lets the generator miss the known pixels by s ~ 0.3 (in [-1, 1] units).
Yeh's Poisson blending is left out: the scores judge the fill itself.

Denoising: y = x + n, n ~ N(0, sigma^2 I), sigma in [-1, 1] units (the models' range: sigma 0.3 is 38
grey levels of 255). The MAP latent under z ~ N(0, I) minimises ||G(z) - y||^2 / (2 sigma^2) + ||z||^2 / 2,
i.e. the objective above with every pixel known and lam = sigma^2; the answer is G(z*), the nearest
image the model can make (projection onto the range of G, Bora section 1; Shah & Hegde 2018). With no
sigma given it is estimated from y (Donoho & Johnstone 1994: the median absolute deviation of the
finest wavelet coefficients; `estimate_sigma`).

The search (Bora, MNIST setting): `restarts` starting points per image, Adam on z (100 steps at lr 0.1:
on 30 MNIST train digits and the DCGAN, centre box, as good as 300 at lr 0.05 (PSNR 8.8 vs 8.2 dB,
classifier 0.77 vs 0.70) for a third of the time), all images and
restarts in one batch (chunked by `batch_size`, which does not change the result: the loss is a sum of
per-image terms and Adam is element-wise), and each image keeps the restart with the lowest objective.
Starting points: z ~ N(0, I) drawn from `generator`; an Autoencoder's restart 0 starts at the encoder
mean mu(x) of the input (missing pixels filled with the known pixels' mean): the encode-decode answer,
refined by the search. A conditional generator uses the labels when given, else restart r tries class
r % K, so the search picks the class too. The model is frozen (requires_grad False, eval mode); only
z is optimised.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager

import numpy as np
import torch

from ..models import Autoencoder, Generator
from ..registry import UsageError

DEFAULTS = dict(restarts=10, steps=100, lr=0.1, batch_size=1000)  # Bora: 10 restarts; Adam on z


# ---------------------------------------------------------------------------------------- inputs
def check_images(model, x: torch.Tensor) -> None:
    """x (N, C, H, W) must have the model's image shape (one-line UsageError naming both)."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(model.shape):
        raise UsageError(f"the input images are {tuple(x.shape[1:])} but the model makes "
                         f"{tuple(model.shape)} (C, H, W): give images of the model's size and channels")


def box_mask(shape, box: tuple[int, int, int, int]) -> torch.Tensor:
    """(1, 1, H, W) float mask of an image shape (C, H, W): 0 inside the box (x, y, w, h) = (column,
    row, width, height) of its top-left corner and size, 1 elsewhere."""
    _, H, W = shape
    x, y, w, h = box
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > W or y + h > H:
        raise UsageError(f"--box {x},{y},{w},{h} (x,y,w,h) is not inside the {W}x{H} image: "
                         f"need x, y >= 0, w, h >= 1, x + w <= {W}, y + h <= {H}")
    m = torch.ones(1, 1, H, W)
    m[..., y:y + h, x:x + w] = 0
    return m


def check_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A mask (N or 1, 1, H, W) of 0/1 (bool or numbers) for images x (N, C, H, W) -> float 0/1."""
    N, _, H, W = x.shape
    if mask.ndim == 2:
        mask = mask[None, None]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, N) or tuple(mask.shape[2:]) != (H, W):
        raise UsageError(f"the mask is {tuple(mask.shape)} but the images are {tuple(x.shape)}: the mask "
                         f"must be (N or 1, 1, H, W) = ({N} or 1, 1, {H}, {W}), 1 = known, 0 = missing")
    if not ((mask == 0) | (mask == 1)).all():
        raise UsageError("the mask must hold only 0 (missing) and 1 (known)")
    return mask.float()


# ---------------------------------------------------------------------------------------- the search
@contextmanager
def frozen(model: torch.nn.Module):
    """The model in eval mode with requires_grad False on its parameters; both restored after."""
    flags, was = [p.requires_grad for p in model.parameters()], model.training
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was)


def _generate(model, z: torch.Tensor, y) -> torch.Tensor:
    """model.generate(z, y) with gradients to z: the Protocol's generate is wrapped in torch.no_grad
    (for sampling), so the undecorated function underneath is called; it is the same computation."""
    return inspect.unwrap(type(model).generate)(model, z, y)


def _starts(model, x: torch.Tensor, mask: torch.Tensor, restarts: int, generator) -> torch.Tensor:
    """Starting latents (restarts, N, z_dim): N(0, I) from `generator`; restart 0 of an Autoencoder at
    mu(x) with missing pixels filled by the mean of the known ones."""
    z = torch.randn(restarts, len(x), model.z_dim, generator=generator)
    if isinstance(model, Autoencoder):
        fill = (x * mask).flatten(1).sum(1) / mask.expand_as(x).flatten(1).sum(1).clamp_min(1)
        x_in = mask * x + (1 - mask) * fill[:, None, None, None]
        with torch.no_grad():
            z[0] = torch.cat([model.encode(c)[0] for c in x_in.split(DEFAULTS["batch_size"])]).cpu()
    return z


def search(model, x: torch.Tensor, mask: torch.Tensor, lam: float, generator: torch.Generator,
           labels: torch.Tensor | None = None, restarts: int = DEFAULTS["restarts"],
           steps: int = DEFAULTS["steps"], lr: float = DEFAULTS["lr"],
           batch_size: int = DEFAULTS["batch_size"]) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin_z sum mask * (G(z) - x)^2 + lam ||z||^2 per image, best of `restarts` Adam runs of `steps`.
    x: (N, C, H, W) in [-1, 1]; mask: (N or 1, 1, H, W) float 0/1. -> (G(z*) (N, C, H, W), z* (N, z_dim))."""
    if not isinstance(model, Generator):
        raise UsageError(f"restoration needs a model with generate(z, y) (models.Generator); "
                         f"{type(model).__name__} has none")
    for name, v in (("restarts", restarts), ("steps", steps), ("batch_size", batch_size)):
        if v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if not (lr > 0 and lam >= 0):
        raise UsageError(f"the learning rate must be > 0 and the prior weight >= 0, got {lr} and {lam}")
    check_images(model, x)
    N, R, K = len(x), restarts, model.num_classes
    mask = mask.expand(N, *mask.shape[1:])
    if not K or (labels is not None and (labels == -1).all()):
        labels = None                                            # unconditional, or all unlabelled (-1)
    elif labels is None:
        labels = torch.arange(R)[:, None].expand(R, N) % K      # restart r tries class r % K
    else:
        if labels.shape != (N,):
            raise UsageError(f"{tuple(labels.shape)} labels for {N} images: give one label per image")
        if labels.min() < 0 or labels.max() >= K:
            raise UsageError(f"labels must be in 0..{K - 1} for this model, got {labels.min()}..{labels.max()}")
        labels = labels[None].expand(R, N)
    z0 = _starts(model, x, mask, R, generator)                   # (R, N, z_dim)
    flat = lambda t: t.reshape(R * N, *t.shape[2:])              # (R, N, ...) -> (R * N, ...)
    xs, ms = flat(x[None].expand(R, *x.shape)), flat(mask[None].expand(R, *mask.shape))
    ys, zs = None if labels is None else flat(labels), flat(z0)
    z_best, loss_best = [], []
    device = next(model.parameters()).device
    with frozen(model), torch.enable_grad():
        for i in range(0, R * N, batch_size):
            sl = slice(i, i + batch_size)
            z = zs[sl].clone().to(device).requires_grad_(True)
            t, m = xs[sl].to(device), ms[sl].to(device)
            y = None if ys is None else ys[sl].to(device)
            opt = torch.optim.Adam([z], lr=lr)
            for _ in range(steps):
                loss = objective(_generate(model, z, y), z, t, m, lam)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
            with torch.no_grad():
                loss_best.append(objective(_generate(model, z, y), z, t, m, lam).cpu())
            z_best.append(z.detach().cpu())
    loss, z = torch.cat(loss_best).view(R, N), torch.cat(z_best).view(R, N, -1)
    best = loss.argmin(0)                                        # (N,) the best restart of each image
    z_star = z[best, torch.arange(N)]
    y_star = None if labels is None else labels[best, torch.arange(N)]
    with torch.no_grad():
        return model.generate(z_star, y_star).cpu().float(), z_star


def objective(g: torch.Tensor, z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, lam: float) -> torch.Tensor:
    """Per image (B,): sum over known pixels of (G(z) - x)^2 + lam ||z||^2."""
    return (mask * (g.float() - x) ** 2).flatten(1).sum(1) + lam * z.pow(2).sum(1)


# ---------------------------------------------------------------------------------------- the two uses
def inpaint(model, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
            labels: torch.Tensor | None = None, lam: float = 0.1, **search_options) -> torch.Tensor:
    """x (N, C, H, W) in [-1, 1] with missing pixels where mask (N or 1, 1, H, W) is 0 -> restored
    (N, C, H, W): the known pixels of x unchanged, the missing ones from G(z*)."""
    check_images(model, x)
    mask = check_mask(mask, x)
    g, _ = search(model, x, mask, lam, generator, labels, **search_options)
    return mask * x + (1 - mask) * g


def estimate_sigma(y: torch.Tensor) -> float:
    """Noise sigma of images y (N, C, H, W) in [-1, 1] units: Donoho & Johnstone's (1994) robust
    estimate median(|HH|) / 0.6745 over the finest diagonal wavelet coefficients, here Haar's
    HH = (a - b - c + d) / 2 of each 2x2 block (orthonormal, so white noise keeps its sigma in HH while
    smooth image content cancels). Written out because scikit-image's estimate_sigma needs
    PyWavelets, which genlab does not depend on."""
    H, W = y.shape[-2] // 2 * 2, y.shape[-1] // 2 * 2
    b = y[..., :H, :W].float()
    hh = (b[..., 0::2, 0::2] - b[..., 0::2, 1::2] - b[..., 1::2, 0::2] + b[..., 1::2, 1::2]) / 2
    return float(hh.abs().median() / 0.6745)


def denoise(model, y: torch.Tensor, sigma: float | None, generator: torch.Generator,
            labels: torch.Tensor | None = None, **search_options) -> torch.Tensor:
    """Noisy y (N, C, H, W) in [-1, 1], Gaussian noise of std `sigma` ([-1, 1] units; None: estimated)
    -> G(z*) (N, C, H, W), the MAP image in the model's range (lam = sigma^2)."""
    check_images(model, y)
    sigma = estimate_sigma(y) if sigma is None else sigma
    if not sigma > 0:
        raise UsageError(f"--sigma must be > 0 (noise std in [-1, 1] units), got {sigma}")
    g, _ = search(model, y, torch.ones(1, 1, *y.shape[2:]), sigma ** 2, generator, labels, **search_options)
    return g


# ---------------------------------------------------------------------------------------- scores
def region_psnr(x: np.ndarray, x_hat: np.ndarray, region: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 images (H, W) over the pixels where `region` is true (all if None):
    scikit-image's peak_signal_noise_ratio of those pixels, data range 255."""
    from skimage.metrics import peak_signal_noise_ratio
    r = np.ones(x.shape, bool) if region is None else region.astype(bool)
    return float(peak_signal_noise_ratio(x[r], x_hat[r], data_range=255))


def region_ssim(x: np.ndarray, x_hat: np.ndarray, region: np.ndarray | None = None) -> float:
    """SSIM of uint8 images (H, W) over a region: scikit-image's structural_similarity map (7x7
    uniform windows, data range 255) averaged over the pixels where `region` is true (all if None;
    scikit-image's own mean crops the 3-pixel border instead). Each window near the region also sees
    known pixels, so an inpainted region's SSIM includes how well the fill joins them."""
    from skimage.metrics import structural_similarity
    _, s = structural_similarity(x, x_hat, data_range=255, full=True)
    return float(s.mean() if region is None else s[region.astype(bool)].mean())
