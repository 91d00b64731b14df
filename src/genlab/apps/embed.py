"""Latent maps: where a trained model puts real (test) images, in 2-D, coloured by class.

  * an autoencoder (models.Autoencoder, the VAE): the posterior means mu(x) of q(z|x) (Kingma &
    Welling 2014; their fig. 4-5 show the 2-D latent space of MNIST). With z_dim = 2 the map is mu
    itself and `manifold` decodes a grid of z over the prior's central mass (K&W fig. 4: a square of
    the unit square mapped through the inverse Gaussian CDF);
  * a GAN (models.Discriminator): D's per-image penultimate features phi(x), the representation
    Radford et al. 2015 (section 5.1) reuse for classification, projected to 2-D.
Projections come from scikit-learn: PCA (with its explained-variance ratios) or t-SNE (van der Maaten
& Hinton 2008; features are first reduced to 50 dimensions by PCA, as their paper does with 30).
How class-separated a map is, is measured by `knn_accuracy`: the 5-fold cross-validated accuracy of a
k-nearest-neighbour classifier (scikit-learn) on the 2-D coordinates or on the full features.
`plot_map` draws the scatter (matplotlib, Agg) and, given a manifold, the decoded grid beside it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import to_float
from ..io import atomic_write
from ..models import Autoencoder, Discriminator, Generator
from ..registry import UsageError

METHODS = ("pca", "tsne")
MAX_POINTS = 20_000
MAX_TSNE = 10_000       # t-SNE is O(n log n) per iteration but ~1 min per 5,000 points on one core
TSNE_PCA_DIMS = 50
MANIFOLD_Q = 0.05       # the decoded grid spans Phi^-1(0.05..0.95) = +-1.64 in each latent (K&W fig. 4)


@dataclass
class LatentMap:
    coords: np.ndarray            # (n, 2) float32
    labels: np.ndarray            # (n,) int64, -1 = unlabelled
    features: np.ndarray          # (n, f) float32: mu(x) or phi(x), before the projection
    source: str                   # "mu(x) of q(z|x)" or "D's penultimate features"
    method: str                   # "pca", "tsne", or "none" (2-D latents shown as they are)
    explained: np.ndarray | None  # (2,) PCA explained-variance ratios, else None


@torch.no_grad()
def features(model, images: torch.Tensor, labels: torch.Tensor | None = None,
             batch_size: int = 500) -> tuple[np.ndarray, str]:
    """uint8 images (n, C, H, W) -> ((n, f) float32 features, what they are): mu(x) for an
    Autoencoder, phi(x) for a Discriminator (labels go to a conditional D)."""
    conditional = False
    if isinstance(model, Autoencoder):
        f, source = (lambda x, y: model.encode(x)[0]), "mu(x) of q(z|x)"
    elif isinstance(model, Discriminator):
        f, source, conditional = model.d_features, "D's penultimate features", bool(model.num_classes)
    else:
        raise UsageError("a latent map needs an autoencoder (vae) or a GAN with a discriminator")
    if conditional and (labels is None or (labels < 0).any()):
        raise UsageError("this conditional run's D reads the class label: use labelled data")
    out = []
    for i in range(0, len(images), batch_size):
        y = labels[i:i + batch_size] if conditional else None
        out.append(f(to_float(images[i:i + batch_size]), y).float().cpu())
    return torch.cat(out).numpy().astype(np.float32), source


def project(feats: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, f) -> ((n, 2) coordinates, PCA explained-variance ratios (2,) or None). 2-D features are
    returned as they are (method "none" in LatentMap)."""
    from sklearn.decomposition import PCA
    if method not in METHODS:
        raise UsageError(f"unknown --method {method!r}; use one of: {', '.join(METHODS)}")
    if feats.shape[1] == 2:
        return feats.astype(np.float32), None
    if len(feats) < 3:
        raise UsageError(f"a 2-D projection needs at least 3 images, got {len(feats)}")
    if method == "pca":
        pca = PCA(n_components=2, random_state=seed).fit(feats)
        return pca.transform(feats).astype(np.float32), pca.explained_variance_ratio_.astype(np.float32)
    from sklearn.manifold import TSNE
    if len(feats) > MAX_TSNE:
        raise UsageError(f"t-SNE of {len(feats):,} points is slow; use --n {MAX_TSNE:,} or fewer, "
                         f"or --method pca")
    x = feats
    if x.shape[1] > TSNE_PCA_DIMS and len(x) > TSNE_PCA_DIMS:
        x = PCA(n_components=TSNE_PCA_DIMS, random_state=seed).fit_transform(x)
    perplexity = min(30.0, (len(x) - 1) / 3)     # scikit-learn needs perplexity < n
    y = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)
    return y.astype(np.float32), None


def embed(model, images: torch.Tensor, labels: torch.Tensor | None = None, method: str = "pca",
          seed: int = 0, batch_size: int = 500) -> LatentMap:
    """The latent map of uint8 images (n, C, H, W) with labels (n,) (-1 or None: unlabelled)."""
    if len(images) > MAX_POINTS:
        raise UsageError(f"--n must be <= {MAX_POINTS:,}, got {len(images):,}")
    shape = tuple(model.shape)
    if tuple(images.shape[1:]) != shape:
        raise UsageError(f"the images are {tuple(images.shape[1:])} but the run was trained on {shape}: "
                         f"use the data it was trained on")
    feats, source = features(model, images, labels, batch_size)
    coords, explained = project(feats, method, seed)
    y = np.full(len(images), -1, np.int64) if labels is None else labels.numpy().astype(np.int64)
    return LatentMap(coords, y, feats, source, "none" if feats.shape[1] == 2 else method, explained)


def knn_accuracy(x: np.ndarray, y: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """5-fold (stratified, shuffled with `seed`) cross-validated accuracy of a k-NN classifier on the
    points x (n, f) with labels y (n,): how well neighbours in the map share a class (chance ~ 1/K)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(k), x, y, cv=cv).mean())


@torch.no_grad()
def manifold(model, n: int = 20, q: float = MANIFOLD_Q) -> torch.Tensor:
    """A 2-D latent space decoded on an n x n grid: z_i = Phi^-1 of n evenly spaced values in
    [q, 1 - q] (Kingma & Welling 2014, fig. 4); row r has z2 from high to low (top to bottom), column
    c has z1 from low to high, as in the scatter. -> (n * n, C, H, W) in [-1, 1]."""
    if not (isinstance(model, Autoencoder) and isinstance(model, Generator) and model.z_dim == 2):
        raise UsageError("the decoded manifold needs an autoencoder with a 2-D latent (vae --z-dim 2)")
    p = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(q, 1 - q, n))
    z1, z2 = torch.meshgrid(p, p.flip(0), indexing="xy")          # (n, n): columns z1, rows z2
    return model.generate(torch.stack([z1.flatten(), z2.flatten()], 1))


def plot_map(m: LatentMap, path, title: str = "", grid: torch.Tensor | None = None,
             knn: float | None = None) -> Path:
    """The scatter (one colour per class, legend, axes) and, with `grid` (n*n, C, H, W), the decoded
    manifold beside it; PNG written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    fig, axes = plt.subplots(1, 2 if grid is not None else 1, figsize=(13 if grid is not None else 7, 6.2),
                             squeeze=False)
    ax = axes[0, 0]
    classes = np.unique(m.labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        sel = m.labels == c
        ax.scatter(m.coords[sel, 0], m.coords[sel, 1], s=4, alpha=0.6, color=cmap(i % cmap.N),
                   label="unlabelled" if c < 0 else str(c), rasterized=True)
    if len(classes) > 1 or classes[0] >= 0:
        ax.legend(title="class", markerscale=4, loc="best", fontsize=8, ncols=2 if len(classes) > 10 else 1)
    axis = {"pca": "PC", "tsne": "t-SNE ", "none": "z"}[m.method]
    ev = m.explained
    ax.set_xlabel(f"{axis}1" + (f" ({ev[0]:.1%} of the variance)" if ev is not None else ""))
    ax.set_ylabel(f"{axis}2" + (f" ({ev[1]:.1%})" if ev is not None else ""))
    sub = f"{len(m.coords):,} images, {m.source}, dim {m.features.shape[1]}"
    if knn is not None:
        sub += f"; 5-NN accuracy in 2-D {knn:.3f}"
    ax.set_title(f"{title}\n{sub}" if title else sub, fontsize=9)
    if grid is not None:
        r = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - MANIFOLD_Q)))
        ax.add_patch(matplotlib.patches.Rectangle((-r, -r), 2 * r, 2 * r, fill=False, ls="--", lw=1,
                                                  ec="k", label="decoded grid"))
        n = int(round(len(grid) ** 0.5))
        g = make_grid(grid.float(), nrow=n, padding=0, normalize=True, value_range=(-1, 1))
        axes[0, 1].imshow(g.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[0, 1].set_axis_off()
        axes[0, 1].set_title(f"decoder means on a {n}x{n} grid of z in [-{r:.2f}, {r:.2f}]^2 (dashed square;\n"
                             f"Gaussian quantiles {MANIFOLD_Q:g}..{1 - MANIFOLD_Q:g}), z1 left to right, z2 "
                             f"bottom to top", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))
