"""What the page explores, as library functions over a loaded model (no web code here).

* `directions`: the main directions of a Generator's latent space, as GANSpace does it (Härkönen et
  al. 2020, "GANSpace: Discovering Interpretable GAN Controls", NeurIPS, sec. 2.2 and eq. 2): PCA of
  G's early features over sampled z, then each principal component mapped back to z by least-squares
  regression of z on the PCA coordinates. For z ~ N(0, I), PCA of z itself is isotropic (every
  direction explains the same variance), so the features are the point. "Early features" here: the
  output of the first layer that takes a float input (the z -> hidden Linear of every genlab G, after
  the label embedding of conditional ones), found with forward hooks, so no model is named.
  For a linear first layer h = W z the regression returns W's right singular vectors (the test).
* `latent_map`: a 2-D PCA of the latent means mu(x) of some training images (Autoencoder), the map
  the drawn digit is placed on (Kingma & Welling 2014 fig. 4 shows such a 2-D latent manifold).
* `png_grid` / `gif`: images (n, C, H, W) in [-1, 1] -> bytes (torchvision's make_grid, Pillow).
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits
from torchvision.utils import make_grid  # imported here: its first import takes seconds

from ..data import to_float, to_uint8
from ..models import Autoencoder, Generator


class _Got(Exception):
    """Raised by the hook once the features are in hand: the rest of G need not run."""


def first_features(model: Generator, z: torch.Tensor, y=None) -> torch.Tensor:
    """(n, F) output of the first leaf module that `model.generate(z, y)` runs on a float input."""
    got, hooks = [], []

    def hook(module, inputs, output):
        if inputs and torch.is_tensor(inputs[0]) and inputs[0].is_floating_point() and torch.is_tensor(output):
            got.append(output.detach().float().flatten(1))
            raise _Got

    for m in model.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(hook))
    try:
        model.generate(z, y)
    except _Got:
        pass
    finally:
        for h in hooks:
            h.remove()
    return got[0]


@torch.inference_mode()
def directions(model: Generator, k: int = 8, n: int = 2000, generator=None) -> dict:
    """GANSpace directions: -> {"u": (k, z_dim) unit vectors in z, "explained": (k,) variance ratios
    of the feature PCA}. z: n draws from N(0, I) (`generator`); labels i % K for conditional models."""
    z = torch.randn(n, model.z_dim, generator=generator)
    y = torch.arange(n) % model.num_classes if model.num_classes else None
    feats = first_features(model, z, y).numpy().astype(np.float64)                      # (n, F)
    k = max(1, min(k, model.z_dim, feats.shape[1], n - 1))
    # one BLAS thread: the model's worker is single-threaded, and 2 OpenBLAS threads on a loaded
    # 2-core machine made this SVD 15x slower (measured: 27 s against 1.8 s)
    with threadpool_limits(1):
        # randomized SVD (Halko et al. 2011), as GANSpace uses for its large feature maps; seeded
        pca = PCA(k, svd_solver="randomized", random_state=0).fit(feats)
        x = pca.transform(feats)                                                         # (n, k)
        # eq. 2 of GANSpace: U = argmin ||U x - z||^2, one column per component, solved at once
        u, *_ = np.linalg.lstsq(x, z.numpy().astype(np.float64), rcond=None)             # (k, z_dim)
    u /= np.linalg.norm(u, axis=1, keepdims=True).clip(1e-12)
    return {"u": torch.from_numpy(u).float(), "explained": pca.explained_variance_ratio_.tolist()}


@torch.inference_mode()
def latent_map(model: Autoencoder, images: torch.Tensor, batch: int = 500) -> dict:
    """images uint8 (N, C, H, W) -> the 2-D PCA of their latent means mu(x): {"mean": (z_dim,),
    "components": (2, z_dim), "explained": (2,), "points": (N, 2)} (numpy; `place` maps new mu)."""
    mu = torch.cat([model.encode(to_float(images[i:i + batch]))[0] for i in range(0, len(images), batch)])
    with threadpool_limits(1):
        pca = PCA(2, svd_solver="full").fit(mu.double().numpy())
    return {"mean": pca.mean_, "components": pca.components_, "explained": pca.explained_variance_ratio_,
            "points": pca.transform(mu.double().numpy())}


def place(lmap: dict, mu: torch.Tensor) -> np.ndarray:
    """Latent means (n, z_dim) -> their points (n, 2) on the map."""
    return (mu.double().numpy() - lmap["mean"]) @ lmap["components"].T


def shift(z: torch.Tensor, u: torch.Tensor, amounts) -> torch.Tensor:
    """z (n, z_dim) moved by sum_k amounts[k] * u[k] (GANSpace's edit z' = z + x_k u_k)."""
    a = torch.as_tensor(list(amounts), dtype=z.dtype)
    return z + a @ u[:len(a)] if len(a) else z


def _pil(x: torch.Tensor, nrow: int | None = None, scale: int = 1) -> Image.Image:
    grey = x.shape[1] == 1
    if len(x) > 1:  # make_grid returns 3 channels; a grey grid is kept grey (a third of the bytes)
        x = make_grid(x.float(), nrow=nrow or math.ceil(math.sqrt(len(x))), padding=2, pad_value=1.0)
    else:
        x = x[0]
    a = to_uint8(x).permute(1, 2, 0).numpy()                                            # (H, W, C)
    img = Image.fromarray(a[..., 0] if grey else a)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def png_grid(x: torch.Tensor, nrow: int | None = None, scale: int = 1) -> bytes:
    """x (n, C, H, W) in [-1, 1] -> PNG bytes of a grid (one image: no border). compress_level 1:
    the grid is small and latency matters more than 10% of its bytes."""
    buf = io.BytesIO()
    _pil(x, nrow, scale).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def gif(frames: torch.Tensor, scale: int = 4, ms: int = 80) -> bytes:
    """frames (s, C, H, W) in [-1, 1] -> an animated GIF, looping forth and back."""
    imgs = [_pil(f[None], scale=scale) for f in frames]
    imgs = imgs + imgs[-2:0:-1]
    buf = io.BytesIO()
    imgs[0].save(buf, "GIF", save_all=True, append_images=imgs[1:], duration=ms, loop=0)
    return buf.getvalue()
