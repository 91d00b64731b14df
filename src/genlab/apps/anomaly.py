"""Anomaly scores from a trained generative model: higher = more anomalous (less like the training data).

Likelihood models (the VAE; models.Likelihood):
  * `elbo`: the negative ELBO, -E_q[log p(x|z)] + KL(q(z|x) || p(z)) (Kingma & Welling 2014), averaged
    over `samples` draws of z; the usual VAE anomaly score (An & Cho 2015 score the reconstruction
    probability, the same expectation without the KL term);
  * `iwae`: the importance-weighted bound -L_k(x) (Burda, Grosse & Salakhutdinov 2016, eq. 8), a
    tighter estimate of -log p(x); computed by metrics/nll.py's iwae_log_likelihood. Unlike
    `genlab eval`'s NLL (Burda's protocol binarises the test digits), the images are scored as
    given, with the soft-BCE / discretised likelihood the model was trained with, so a score is a
    deterministic function of the image, the seed and the batch size (the order of the z draws).
  * `recon`: the squared reconstruction error ||x - reconstruct(x)||^2 at the posterior mean, the
    classic autoencoder score (any models.Autoencoder; Sakurada & Yairi 2014);
  * `ssim`: 1 - SSIM(x, reconstruct(x)) (Wang et al. 2004, their 11x11 Gaussian window), the
    reconstruction compared by local means, contrasts and correlations rather than per pixel, as in
    Bergmann et al. 2019 ("Improving Unsupervised Defect Segmentation by Applying Structural
    Similarity to Autoencoders", VISAPP): a slightly shifted or thicker stroke costs less than a
    missing or extra one;
  * `complexity`, `recon-complexity`: the -ELBO or the reconstruction NLL in bits minus the PNG
    length of the image (input complexity, Serra et al. 2020); `ratio`: the -ELBO minus that of a
    background model trained on perturbed inputs (Ren et al. 2019). See likelihood_corrections.py;
  * `gmm` (default), `knn`: where the encoder puts x rather than how well the decoder redraws it:
    -log p(mu(x)) under a Gaussian mixture fitted to the training images' codes (DAGMM's latent
    density, Zong et al. 2018), or the mean distance to the k nearest training codes. See
    feature_distance.py;
GANs (models.Adversarial):
  * `anogan`: AnoGAN (Schlegl et al. 2017, "Unsupervised Anomaly Detection with Generative Adversarial
    Networks to Guide Marker Discovery", section 2.2): find z with G(z) ~ x by `steps` Adam steps on
    (1 - lambda) * R + lambda * D_f, R = sum |x - G(z)| (residual loss), D_f = sum |f(x) - f(G(z))| the
    discrimination loss on D's features f (the input of D's last linear layer); the score is that loss
    at the last step (their eq. 5-6, lambda = 0.1). Several z starts per image, the best kept;
  * `disc`: -D(x), the discriminator's logit negated (D was trained to score real data high): one
    forward pass, the cheap baseline.

Every score is computed with the model in eval mode (batch norm with its running statistics: scoring
in train mode made each image's score depend on its batch, the GANomaly evaluation bug) and without
changing any weight; the mode is restored after. Inputs: float (N, C, H, W) in [-1, 1] of the
model's image shape. Which method is the default for each family was chosen by measurement
(benchmarks/bench_anomaly.py, README "Anomaly detection").
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from ..metrics.nll import iwae_log_likelihood
from ..models import Adversarial, Autoencoder, Likelihood
from ..models.base import eval_mode
from ..registry import UsageError
from . import feature_distance as fd
from . import likelihood_corrections as lc


# ---------------------------------------------------------------------------- likelihood models
def neg_elbo(model, x: torch.Tensor, generator=None, samples: int = 10) -> torch.Tensor:
    """-ELBO(x) (B,) in nats, averaged over `samples` draws of z ~ q(z|x)."""
    return -model.elbo(x, generator, samples).double()


def neg_iwae(model, x: torch.Tensor, generator=None, k: int = 100) -> torch.Tensor:
    """-L_k(x) (B,) in nats (Burda et al. 2016), an upper bound on -log p(x) tightening with k."""
    return -iwae_log_likelihood(model, x, k=k, generator=generator, batch=max(k, 1000))


def recon_error(model, x: torch.Tensor) -> torch.Tensor:
    """||x - reconstruct(x)||^2 per image (B,)."""
    return (x - model.reconstruct(x)).double().pow(2).flatten(1).sum(1)


def ssim_error(model, x: torch.Tensor) -> torch.Tensor:
    """1 - SSIM(x, reconstruct(x)) per image (B,) with Wang et al. 2004's own settings (an 11x11
    Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03; scikit-image's structural_similarity with
    gaussian_weights, channels averaged), on intensities in [0, 1]: the luminance term is not
    shift-invariant and assumes black = 0. Measured on protocol (a) (README): mean AUROC 0.972 vs
    0.969 for scikit-image's default 7x7 uniform window and 0.955 for the same window on [-1, 1]."""
    from skimage.metrics import structural_similarity
    a, b = ((t.double().cpu().numpy() + 1) / 2 for t in (x, model.reconstruct(x)))
    wang = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    return torch.tensor([1 - structural_similarity(p, q, data_range=1.0, channel_axis=0, **wang)
                         for p, q in zip(a, b)], dtype=torch.float64)


# ---------------------------------------------------------------------------- GANs
def _last_linear(D: nn.Module) -> nn.Linear:
    """D's last linear layer; its input is the feature vector f(x) AnoGAN matches (DCGAN's flattened
    conv features, the MLP's hidden layer)."""
    linear = [m for m in D.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise UsageError("anogan needs a discriminator ending in a linear layer; use --method disc")
    return linear[-1]


def _d_with_features(model, x: torch.Tensor, y) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(x, y) logits (B,), f(x) (B, F)): f captured by a forward pre-hook on D's last linear layer."""
    got = []
    hook = _last_linear(model.D).register_forward_pre_hook(lambda m, inp: got.append(inp[0]))
    try:
        logits = model.D(x, y)
    finally:
        hook.remove()
    return logits.float(), got[-1].float().flatten(1)


def disc_score(model, x: torch.Tensor, y=None) -> torch.Tensor:
    """-D(x) (B,): a low logit means D finds x unlike the real data it was trained on."""
    with torch.no_grad():
        return -model.D(x, y).float().double()


def anogan_score(model, x: torch.Tensor, y=None, generator=None, steps: int = 100, restarts: int = 2,
                 lam: float = 0.1, lr: float = 0.05) -> torch.Tensor:
    """AnoGAN's score (B,): min over `restarts` random starts of the loss after `steps` Adam steps on z
    (Schlegl et al. 2017, eq. 3-6). The weights get no gradient: only z is differentiated."""
    G = model.G_ema if model.config.ema else model.G  # the generator samples come from (GAN.generate)
    with torch.no_grad():
        f_x = _d_with_features(model, x, y)[1]                              # (B, F)
    best = torch.full((len(x),), math.inf, dtype=torch.float64)
    for _ in range(restarts):
        z = torch.randn(len(x), model.z_dim, generator=generator).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for step in range(steps + 1):
            with torch.enable_grad():
                g = G(z, y)                                                 # (B, C, H, W)
                r = (x - g).abs().flatten(1).sum(1)                         # residual loss (B,)
                d = (f_x - _d_with_features(model, g, y)[1]).abs().sum(1)   # discrimination loss (B,)
                loss = (1 - lam) * r + lam * d
                if step == steps:
                    break
                z.grad, = torch.autograd.grad(loss.sum(), z)
            opt.step()
        best = torch.minimum(best, loss.detach().double())
    return best


# ---------------------------------------------------------------------------- the table
# name -> (Protocol the model needs, what it needs in words, scoring function)
METHODS = {
    "elbo": (Likelihood, "a likelihood model (vae)",
             lambda m, x, y, g, o: neg_elbo(m, x, g, **o)),
    "iwae": (Likelihood, "a likelihood model (vae)",
             lambda m, x, y, g, o: neg_iwae(m, x, g, **o)),
    "recon": (Autoencoder, "an autoencoder (vae)",
              lambda m, x, y, g, o: recon_error(m, x)),
    "ssim": (Autoencoder, "an autoencoder (vae)",
             lambda m, x, y, g, o: ssim_error(m, x)),
    "complexity": (Likelihood, "a likelihood model (vae)",
                   lambda m, x, y, g, o: lc.complexity_score(neg_elbo(m, x, g, o.get("samples", 10)), x)),
    "recon-complexity": (Likelihood, "a likelihood model (vae)",
                         lambda m, x, y, g, o: lc.complexity_score(lc.recon_nll(m, x), x)),
    "ratio": (Likelihood, "a likelihood model (vae)",
              lambda m, x, y, g, o: lc.likelihood_ratio(neg_elbo(m, x, g, o.get("samples", 10)),
                                                        neg_elbo(o["background"], x, g,
                                                                 o.get("samples", 10)))),
    "knn": (Autoencoder, "an autoencoder (vae)",
            lambda m, x, y, g, o: fd.knn_score(m, x, **o)),
    "gmm": (Autoencoder, "an autoencoder (vae)",
            lambda m, x, y, g, o: fd.gmm_score(m, x, **o)),
    "anogan": (Adversarial, "a GAN (gan, dcgan, cgan)",
               lambda m, x, y, g, o: anogan_score(m, x, y, g, **o)),
    "disc": (Adversarial, "a GAN (gan, dcgan, cgan)",
             lambda m, x, y, g, o: disc_score(m, x, y)),
}
# the default of each family. VAE: gmm (20 components), chosen on a validation split (models trained
# on MNIST train images 0-49,999, scored on 50,000-59,999; README "Anomaly detection"): mean AUROC
# 0.983 (one digit normal) and 0.935 (one held out), vs knn (k = 5) 0.973 / 0.930, ssim 0.975 / 0.729,
# recon 0.955 / 0.704. On the test split earlier: the -ELBO 0.883 / 0.646 (the Bernoulli likelihood
# favours thin, low-ink digits, 1s, whatever the training digit); the complexity and ratio
# corrections 0.59 / 0.51 and 0.630 / 0.432 (likelihood_corrections.py).
# GANs: AnoGAN (Schlegl et al. 2017): 0.969 vs 0.953 for -D(x) on digit 0, the one GAN run measured.
DEFAULTS = ("gmm", "anogan")


def methods_for(model) -> list[str]:
    """The methods `model` supports, its default first."""
    ok = [name for name, (proto, _, _) in METHODS.items() if isinstance(model, proto)]
    return sorted(ok, key=lambda n: n not in DEFAULTS)


def anomaly_scores(model, x: torch.Tensor, method: str | None = None, generator=None,
                   labels: torch.Tensor | None = None, batch_size: int = 500, background=None,
                   reference=None, **options) -> tuple[np.ndarray, str]:
    """-> (scores (N,) float64, higher = more anomalous; the method's name) for images x float
    (N, C, H, W) in [-1, 1]. `method` None: the model's default (methods_for). `labels` are used
    only by conditional GANs (D(x, y)); `options` go to the method (samples, k, steps, restarts,
    lam). `background`: the model trained on perturbed inputs that `ratio` needs; `reference`: the
    images (uint8 (M, C, H, W)) `knn` and `gmm` compare against, by default the run's training
    data. Randomness from `generator`; the models' train/eval mode and weights are unchanged."""
    supported = methods_for(model)
    if not supported:
        raise UsageError(f"{getattr(model, 'name', type(model).__name__)} models cannot score "
                         f"anomalies: use a vae or a GAN run")
    method = method or supported[0]
    if method not in METHODS:
        raise UsageError(f"unknown anomaly method {method!r}; known: {', '.join(METHODS)}")
    proto, needs, fn = METHODS[method]
    if not isinstance(model, proto):
        raise UsageError(f"--method {method} needs {needs}; this model supports: {', '.join(supported)}")
    if method == "ratio":
        lc.check_background(model, background)
        options = {**options, "background": background}
    shape = tuple(model.shape)
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise UsageError(f"images of shape {tuple(x.shape[1:])} do not fit this model's {shape} "
                         f"(C, H, W): score images like those it was trained on")
    if model.num_classes:
        if labels is None:
            raise UsageError("a conditional model scores x given its label: the input needs `labels`")
        labels = torch.as_tensor(labels, dtype=torch.long)
    if method in ("knn", "gmm"):
        options = {**options, "reference": fd.reference_for(model, reference)}
    device = next(model.parameters()).device
    out = []
    with eval_mode(model), eval_mode(background if background is not None else nn.Identity()):
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            yb = None if labels is None or not model.num_classes else \
                labels[i:i + batch_size].to(device)
            with torch.no_grad():
                out.append(fn(model, xb, yb, generator, options).cpu())
    scores = torch.cat(out).numpy()
    if not np.isfinite(scores).all():
        raise UsageError(f"{int((~np.isfinite(scores)).sum())} scores are not finite: the model's "
                         f"weights may be broken (retrain it)")
    return scores, method
