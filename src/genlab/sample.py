"""Turning samples into files: image grids (torchvision's make_grid/save_image) and npz arrays."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torchvision.utils import save_image

from .data import to_uint8
from .io import atomic_save_npz
from .models.base import class_labels
from .registry import UsageError


def draw(model, n: int, seed: int = 0, labels=None, batch_size: int = 500,
         progress: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n samples (n, C, H, W) in [-1, 1], drawn in batches from one generator seeded with `seed`;
    with the labels asked for (class i % K by default) for conditional models, else None.
    `progress`: a tqdm bar on stderr when it is a terminal (long draws say how far they are)."""
    from tqdm import tqdm
    g = torch.Generator().manual_seed(seed)
    k = model.num_classes  # models.Generator: 0 = unconditional
    if labels is not None and not k:
        raise UsageError("--label needs a conditional model (this one is unconditional)")
    if k:
        labels = class_labels(n, k, labels, "--label")
    out = []
    with tqdm(total=n, unit="img", desc="sampling", leave=False,
              disable=None if progress and n > batch_size else True) as bar:
        for i in range(0, n, batch_size):
            out.append(model.sample(min(batch_size, n - i), None if labels is None else labels[i:i + batch_size],
                                    generator=g))
            bar.update(len(out[-1]))
    return torch.cat(out), labels


def save_grid(x: torch.Tensor, path, nrow: int | None = None, labels: torch.Tensor | None = None) -> Path:
    """x: (N, C, H, W) in [-1, 1] -> PNG grid, nrow images per row (default: square). With labels
    (conditional samples), images are sorted by class so that row k shows class k when the classes
    are balanced (e.g. 100 samples of 10 classes -> a 10x10 grid, one class per row)."""
    path = Path(path)
    if labels is not None:
        order = torch.argsort(labels.cpu(), stable=True)
        x, counts = x[order], torch.bincount(labels.cpu())
        if nrow is None and (counts == counts.max()).all():
            nrow = int(counts.max())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(x.float(), path, nrow=nrow or math.ceil(math.sqrt(len(x))), normalize=True,
               value_range=(-1, 1), padding=2, pad_value=1.0)
    return path


def save_npz(x: torch.Tensor, path, labels: torch.Tensor | None = None) -> Path:
    """`images` uint8 (N, C, H, W) = round((x + 1) * 127.5); `labels` int64 (N,) for conditional models."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"images": to_uint8(x).numpy()}
    if labels is not None:
        arrays["labels"] = labels.to(torch.int64).numpy()
    atomic_save_npz(path, **arrays)  # never a half-written file where a good one was
    return path
