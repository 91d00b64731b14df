"""Anomaly scores in a model's latent space: how far an image's code lies from the training images' codes.

The reconstruction scores (anomaly.py's `recon`, `ssim`) ask whether the decoder can redraw x; a
model trained on nine digits redraws the tenth well enough (a 1 is a stroke any digit model can draw:
README "Anomaly detection", protocol (b)). These scores ask instead where the encoder puts x: the
encoder mean mu(x) (B, z_dim) of the VAE (models.Autoencoder) against mu of every training image.

  * `knn`: the mean Euclidean distance from mu(x) to its k nearest training codes, the k-NN outlier
    score (Angiulli & Pizzuti 2002; on deep features: Bergman, Cohen & Hoshen 2020, "Deep Nearest
    Neighbor Anomaly Detection", and Sun et al. 2022, "Out-of-Distribution Detection with Deep Nearest
    Neighbors"). No density model, no fitting: only the training codes.
  * `gmm`: -log p(mu(x)) under a Gaussian mixture fitted (scikit-learn, full covariances, EM) to the
    training codes: the latent density of DAGMM (Zong et al. 2018, "Deep Autoencoding Gaussian Mixture
    Model for Unsupervised Anomaly Detection"), here on a VAE trained as usual rather than jointly.

Neither uses labels: the training images are those the run was trained on (its recorded data source
and --classes), or any images the caller passes as the reference. Which score and which k are the
defaults was chosen on a validation split of MNIST's train set, not on the test digits (README).
"""
from __future__ import annotations

import numpy as np
import torch

from ..models.base import eval_mode
from ..registry import UsageError


def training_images(model) -> torch.Tensor:
    """The images (N, C, H, W) uint8 the run was trained on: its recorded data source, data folder,
    image size and classes (models.Loaded.train_config). A one-line UsageError when they cannot be
    loaded any more (moved data): the caller can pass the images as a reference instead."""
    from ..run import training_data
    tc = getattr(model, "train_config", None)
    if not tc:
        raise UsageError("this model has no recorded training data: pass the training images "
                         "(--reference FILE.npz)")
    try:
        ds = training_data(tc)
    except UsageError as e:
        raise UsageError(f"cannot load the run's training data ({tc['data']}): {e}; pass the "
                         f"training images with --reference FILE.npz") from None
    return ds.images


@torch.no_grad()
def codes(model, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """mu(x) (N, z_dim) float32 for images x (N, C, H, W), float in [-1, 1] or uint8 (converted a
    batch at a time: a whole training set in float would be 4x its size), the model in eval mode."""
    from ..data import to_float
    device = next(model.parameters()).device
    with eval_mode(model):
        return torch.cat([model.encode(to_float(b) if b.dtype == torch.uint8 else b)[0].float().cpu()
                          for b in (x[i:i + batch_size].to(device) for i in range(0, len(x), batch_size))])


class Reference:
    """The training codes (M, z_dim) float64 a score compares against, and the mixture fitted to them
    (on first use). Built once per scoring call (anomaly_scores), not per batch."""

    def __init__(self, model, images: torch.Tensor):
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model.shape):
            raise UsageError(f"reference images of shape {tuple(images.shape[1:])} do not fit this "
                             f"model's {tuple(model.shape)} (C, H, W): pass its training images")
        self.z = codes(model, images).double()               # (M, z_dim), converted once, not per batch
        self._gmm = {}

    def knn(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """Mean distance (B,) from each row of z (B, z_dim) to its k nearest reference codes."""
        if not 1 <= k <= len(self.z):
            raise UsageError(f"knn needs 1 <= k <= {len(self.z)} (the reference images), got {k}")
        d = torch.cdist(z.double(), self.z)                   # (B, M)
        return d.topk(k, dim=1, largest=False).values.mean(1)

    def gmm_nll(self, z: torch.Tensor, components: int) -> torch.Tensor:
        """-log p(z) (B,) under a full-covariance Gaussian mixture of `components` fitted to the
        reference codes by EM (k-means init, random_state 0: the same fit every call)."""
        from sklearn.mixture import GaussianMixture
        if not 1 <= components <= len(self.z):
            raise UsageError(f"gmm with {components} components needs at least as many reference "
                             f"images, got {len(self.z)}: use --method knn (or more images)")
        if components not in self._gmm:
            # reg_covar 1e-4: a floor on each component's variances (the codes of a well-fitted VAE
            # can collapse in unused latent directions, which makes a full covariance singular)
            self._gmm[components] = GaussianMixture(components, covariance_type="full", reg_covar=1e-4,
                                                    random_state=0).fit(self.z.numpy())
        return torch.from_numpy(-self._gmm[components].score_samples(z.double().numpy()))


def knn_score(model, x: torch.Tensor, reference: Reference, k: int = 5) -> torch.Tensor:
    return reference.knn(codes(model, x), k)


def gmm_score(model, x: torch.Tensor, reference: Reference, components: int = 20) -> torch.Tensor:
    return reference.gmm_nll(codes(model, x), components)


def reference_for(model, images: np.ndarray | torch.Tensor | None) -> Reference:
    """The Reference of `images` (uint8 (N, C, H, W)), by default the run's own training images."""
    x = training_images(model) if images is None else torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise UsageError(f"reference images must be uint8 (N, C, H, W), got {x.dtype}")
    return Reference(model, x)
