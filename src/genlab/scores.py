"""What `evaluate` scores, and the scores that need no reference features: a `Source` (a trained run
drawn from, or the images of an npz) and the Stacked-MNIST mode count and the IWAE NLL of a VAE."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from .data import read_npz
from .io import sha256_file
from .reference import _load_reference_images, reference_source
from .registry import UsageError

SAMPLING = ("{n} samples drawn with seed {seed} in batches of {batch} (conditional models: labels "
            "i % K), quantised to uint8 by round((x + 1) * 127.5)")


@dataclass
class Source:
    """A run's model (drawn from) or an npz's uint8 images and labels; the data it is compared with."""
    info: dict                      # the report's "source" entry
    data: str                       # reference data name
    data_dir: str | None
    image_size: int | None
    model: object = None
    images: object = None           # uint8 (N, C, H, W) tensor (npz)
    labels: object = None           # int64 (N,) tensor or None (npz)

    @property
    def conditional(self) -> bool:
        return bool(self.labels is not None if self.model is None else self.model.num_classes)

    def draw(self, n: int | None, seed: int, batch_size: int):
        """uint8 samples + requested labels: drawn from the model, or the first n of the npz."""
        if self.model is None:
            n = len(self.images) if n is None else min(n, len(self.images))
            return self.images[:n], (None if self.labels is None else self.labels[:n]), n
        from .data import to_uint8
        from .sample import draw  # imports torchvision (seconds): only when sampling
        x, y = draw(self.model, n, seed, None, batch_size)
        return to_uint8(x), y, n

    def sampling(self, n: int, seed: int, batch_size: int) -> str:
        return (SAMPLING.format(n=n, seed=seed, batch=batch_size) if self.model is not None
                else f"the first {n} images of the npz")


def open_source(path, ref: str | None, data_dir: str | None) -> Source:
    """A run folder, checkpoint folder or FILE.npz -> Source; the reference data is `ref`, else the
    run's own data (with its data folder and image size)."""
    import numpy as np
    import torch
    path = Path(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise UsageError(f"samples file {path} not found")
        x, y = read_npz(path, "; make one with genlab sample RUN --out FILE.npz")
        images = torch.from_numpy(np.ascontiguousarray(x))
        labels = None if y is None else torch.from_numpy(y.astype(np.int64))
        info = {"kind": "npz", "path": str(path), "sha256": sha256_file(path), "n_images": len(images)}
        if ref is None:
            raise UsageError("scoring an npz of samples needs --ref DATA (e.g. --ref mnist "
                             "--data-dir ../shared/data/mnist)")
        return Source(info, ref, data_dir, None, images=images, labels=labels)
    if not path.is_dir():
        raise UsageError(f"{path} is neither a run folder nor an .npz of samples")
    from .run import load
    model = load(path)
    tc = model.train_config  # models.Loaded
    data = ref or tc.get("data")
    if not data:
        raise UsageError(f"{path}: the run does not record its data; pass --ref DATA")
    own = data == tc.get("data")  # the run's own data folder is used for its own data only
    info = {"kind": "run", "path": str(path), "model": model.name, "checkpoint": str(model.checkpoint),
            "step": model.step, "data": tc.get("data"), "num_classes": int(model.num_classes)}
    return Source(info, data, data_dir if data_dir is not None else (tc.get("data_dir") if own else None),
                  tc.get("image_size") if own else None, model=model)


def stacked_score(src: Source, n: int, seed: int, batch_size: int) -> dict:
    from .metrics import FEATURES
    from .metrics.stacked import classify_channels, mode_stats
    x, y, n = src.draw(n, seed, batch_size)
    modes = classify_channels(x)
    values = mode_stats(modes)
    if y is not None and len(y) and int(y.max()) < 1000 and int(y.min()) >= 0:
        values["conditional_accuracy"] = float((modes == y.numpy()).mean())
    return {"values": values, "n": n,
            "features": {"name": "mnist-cnn", "weights_sha256": FEATURES["mnist-cnn"].weights_sha256},
            "reference": {"data": "uniform over the 1000 stacked-MNIST modes"},
            "protocol": "Stacked MNIST (Metz et al. 2017; Lin et al. 2018): each RGB channel classified "
                        "by the MNIST classifier, mode = 100 d_r + 10 d_g + d_b; modes = modes with >= 1 "
                        f"sample; KL(mode histogram || uniform over 1000) in nats; "
                        + src.sampling(n, seed, batch_size)}


def nll_score(src: Source, n: int, k: int, seed: int, batch: int, progress=None) -> dict:
    """IWAE bound on -log p(x) of n test images under a VAE (metrics/nll.py)."""
    import torch
    from .metrics.nll import iwae_log_likelihood, nll_report, prepare
    from .models import Autoencoder
    model = src.model
    if model is None:
        raise UsageError("the nll metric needs a VAE run folder, not an npz of samples")
    lik = getattr(model, "likelihood", None)  # names p(x|z) of a VAE with log_likelihood()
    if not isinstance(model, Autoencoder) or lik is None:
        raise UsageError("the nll metric needs a VAE (a model with encode/decode/log_likelihood); "
                         "this run is a GAN, whose likelihood is not defined")
    src_name, sp = reference_source(src.data, "test")
    ds = _load_reference_images(src.data, src_name, sp, src.data_dir, src.image_size)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n]
    x = prepare(ds.images[idx], lik, g)
    t0 = time.perf_counter()
    parts, step = [], max(1, min(100, len(x)))
    for i in range(0, len(x), step):
        parts.append(iwae_log_likelihood(model, x[i:i + step], k, g, batch))
        if progress:
            progress(f"nll: {i + len(parts[-1])}/{len(x)} images, {time.perf_counter() - t0:.0f} s")
    log_px = torch.cat(parts)
    binar = ("test images dynamically binarised (pixel ~ Bernoulli(grey/255), one draw per image, "
             "Burda et al. 2016)" if lik == "bernoulli" else
             "uint8 test images under the discretised gaussian (256 bins per pixel); bits/dim = "
             "NLL / (C*H*W ln 2)")
    return {"values": nll_report(log_px, lik, math.prod(x.shape[1:])), "n": len(x), "n_reference": len(ds),
            "features": None, "likelihood": lik, "k": k,
            "reference": {"data": src_name, "split": sp, "n": len(ds), "image_size": src.image_size},
            "protocol": f"IWAE bound (Burda et al. 2016, eq. 8) with k={k} importance samples from q(z|x), "
                        f"prior N(0, I), in nats per image (an upper bound on the true NLL); {binar}; "
                        f"{len(x)} test images chosen by torch.randperm (seed {seed}); decoder passes of "
                        f"<= {batch} rows"}

