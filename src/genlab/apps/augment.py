"""Synthetic training sets: N images per class drawn from a trained Generator, written as a
torchvision ImageFolder (`DIR/<class>/<index>.png`) with a manifest.

The use this serves is the one the Classification Accuracy Score measures (Ravuri & Vinyals 2019,
"Classification Accuracy Score for Conditional Generative Models", arXiv:1905.10887): train a
classifier on generated images only and test it on real ones (benchmarks/bench_cas.py).

Where the labels come from:
- a conditional model (num_classes > 0) draws each class y directly: x = G(z, y), the clean case;
- an unconditional model's samples are labelled by a domain classifier (metrics/classifier.py,
  argmax of p(y|x)). That classifier was trained on real labelled data, so these labels carry real-label
  knowledge into the synthetic set: the manifest says so.
With `min_confidence` P > 0 a sample is kept only where the classifier's p(label | x) >= P (for a
conditional model, p(y | x) of the class it was drawn for): a filter in the spirit of the
classifier-based rejection used for synthetic training data (e.g. GaFi, Lampis et al. 2023). Drawing
goes on until every class has N accepted images, within `max_draws`; a class the model (or the filter)
rarely yields is a one-line error naming it.

The folder is written into a temporary sibling and renamed into place: a reader, or a crash, never
sees half a data set where a good one was.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import to_float, to_uint8
from ..io import atomic_write_json, fsync_path, sha256_file
from ..models import Generator, Loaded
from ..registry import UsageError

MAX_PER_CLASS = 100_000     # 1e6 PNG files for 10 classes: beyond that, write shards from several seeds
DRAW_FACTOR = 20            # default max_draws = DRAW_FACTOR * per_class * classes
FILE_BYTES = 4096           # a small PNG still takes one file-system block


@dataclass
class Synthetic:
    """What `augment` drew: images uint8 (n, C, H, W) sorted by class, labels int64 (n,), and how."""
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    labels_from: str            # "conditioning" (x = G(z, y)) or "classifier" (argmax p(y|x))
    min_confidence: float
    drawn: int                  # samples generated in total
    rejected: int               # below min_confidence
    surplus: int                # accepted for a class that was already full (not kept)

    def counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()


def check_request(model, per_class: int, min_confidence: float = 0.0, classifier=None) -> int:
    """The number of classes the set will have; one-line errors for what cannot work."""
    if not isinstance(model, Generator):
        raise UsageError(f"augmenting needs a model that generates images (this is {type(model).__name__})")
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise UsageError(f"--per-class must be in 1..{MAX_PER_CLASS:,}, got {per_class:,}")
    if not 0.0 <= min_confidence < 1.0:
        raise UsageError(f"--min-confidence must be in [0, 1), got {min_confidence}")
    k = model.num_classes
    if classifier is None:
        if not k:
            raise UsageError("an unconditional model's samples need a classifier to label them "
                             "(--classifier mnist|fashion-mnist|PATH)")
        if min_confidence:
            raise UsageError("--min-confidence needs a classifier (--classifier mnist|fashion-mnist|PATH)")
        return k
    from ..metrics.classifier import NUM_CLASSES
    if tuple(model.shape) != (1, 28, 28):
        raise UsageError(f"the classifier reads (1, 28, 28) images and this model makes {tuple(model.shape)}: "
                         f"use a conditional model, or a classifier for this data")
    if k and k != NUM_CLASSES:
        raise UsageError(f"the classifier knows {NUM_CLASSES} classes and this model {k}: "
                         f"drop --min-confidence (and --classifier) for this model")
    return k or NUM_CLASSES


def check_space(per_class: int, num_classes: int, shape, out) -> None:
    """Refuse a set that cannot fit: in memory (held as uint8 before writing) or on out's disk."""
    from ..run import memory_bytes
    n = per_class * num_classes
    ram, disk = n * math.prod(shape), n * (FILE_BYTES + math.prod(shape))
    have = memory_bytes()
    if have and ram > have // 2:
        raise UsageError(f"{n:,} images need ~{ram / 2**30:,.1f} GiB in memory, more than half of this "
                         f"machine's {have / 2**30:.0f} GiB: lower --per-class")
    parent = Path(out).resolve().parent
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if disk > free:
        raise UsageError(f"{n:,} images need ~{disk / 2**30:,.2f} GiB on disk and {parent} has "
                         f"{free / 2**30:,.2f} GiB free: lower --per-class or choose another --out")


@torch.no_grad()
def augment(model, per_class: int, generator: torch.Generator, classifier=None,
            min_confidence: float = 0.0, batch_size: int = 500, max_draws: int | None = None) -> Synthetic:
    """`per_class` images of each class from `model` (a models.Generator), noise from `generator`.

    Conditional models draw x = G(z, y) for each class y; unconditional ones are labelled by
    `classifier` (a metrics.classifier.Classifier: label = argmax p(y|x)). With `min_confidence` P a
    sample is kept only if the classifier gives its label probability >= P. At most `max_draws`
    samples are generated (default DRAW_FACTOR * per_class * classes); a class still short then is a
    UsageError. Deterministic for a given generator state.
    """
    k = check_request(model, per_class, min_confidence, classifier)
    if classifier is not None:
        classifier.eval()
    max_draws = max_draws or DRAW_FACTOR * per_class * k
    kept: list[list[torch.Tensor]] = [[] for _ in range(k)]
    count, tried = torch.zeros(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)
    drawn = rejected = surplus = 0
    while (need := per_class - count).max() > 0:
        if drawn >= max_draws:
            _too_rare(count, tried, per_class, drawn, model.num_classes > 0, min_confidence)
        b = min(batch_size, max_draws - drawn)
        if model.num_classes:  # ask for the classes still short, over-asking by their observed shortfall
            rate = (count + 1).float() / (tried + 1).float()
            ask = torch.where(need > 0, (need.float() / rate).ceil().long(), 0)
            ask = ask.clamp(max=-(-b // int((need > 0).sum())))  # every short class in every batch
            y = torch.repeat_interleave(torch.arange(k), ask)[:b]
            x = model.sample(len(y), y, generator=generator)
        else:
            x, y = model.sample(b, generator=generator), None
        drawn += len(x)
        x = to_uint8(x)  # (b, C, H, W) uint8: the classifier judges the image that is written
        if classifier is None:
            label, ok = y, torch.ones(len(x), dtype=torch.bool)
        else:
            p = torch.softmax(classifier(to_float(x)), 1)  # (b, 10) p(y | x)
            label = p.argmax(1) if y is None else y
            ok = p.gather(1, label[:, None])[:, 0] >= min_confidence
        tried += torch.bincount(label, minlength=k)
        rejected += int((~ok).sum())
        for c in range(k):
            idx = torch.nonzero(ok & (label == c))[:, 0]
            take = idx[:max(int(per_class - count[c]), 0)]
            surplus += len(idx) - len(take)
            if len(take):
                kept[c].append(x[take])
                count[c] += len(take)
    images = torch.cat([torch.cat(v) for v in kept])
    labels = torch.arange(k).repeat_interleave(per_class)
    return Synthetic(images, labels, k, "conditioning" if model.num_classes else "classifier",
                     min_confidence, drawn, rejected, surplus)


def _too_rare(count, tried, per_class, drawn, conditional, p):
    c = int(torch.argmin(torch.where(count < per_class, count, per_class + 1)))  # the shortest class
    why = (f"only {int(count[c]):,} of {int(tried[c]):,} drawn for it had p(y|x) >= {p}" if conditional
           else f"{int(tried[c]):,} of the {drawn:,} samples were labelled {c}"
           + (f" and {int(count[c]):,} had p(y|x) >= {p}" if p else ""))
    raise UsageError(f"class {c} is too rare: {int(count[c]):,} of {per_class:,} images after {drawn:,} "
                     f"draws ({why}); lower --min-confidence or --per-class, or raise --max-draws")


def class_names(num_classes: int) -> list[str]:
    """Folder names "0".."K-1", zero-padded so that ImageFolder's sorted order is the class order."""
    w = len(str(num_classes - 1))
    return [str(c).zfill(w) for c in range(num_classes)]


def manifest(model, result: Synthetic, seed: int | None = None, classifier: dict | None = None) -> dict:
    """The record written beside the images: where they came from and how they were chosen."""
    info = {"format": "genlab-augment-1", "layout": "ImageFolder: <class>/<index>.png"}
    if isinstance(model, Loaded):
        ck = Path(model.checkpoint)
        info.update(run=str(Path(model.run_dir).resolve()), checkpoint=str(ck.resolve()),
                    # MANIFEST.json pins the sha256 of every checkpoint file, so its hash names them all
                    checkpoint_sha256=sha256_file(ck / "MANIFEST.json"),
                    model_sha256=sha256_file(ck / "model.safetensors"), model=model.name, step=model.step)
    counts = result.counts()
    info.update(seed=seed, shape=list(result.images.shape[1:]), num_classes=result.num_classes,
                images=len(result.images), per_class=dict(zip(class_names(result.num_classes), counts)),
                labels_from=result.labels_from, classifier=classifier,
                filter={"min_confidence": result.min_confidence, "drawn": result.drawn,
                        "rejected": result.rejected, "surplus": result.surplus})
    if result.labels_from == "classifier":
        info["note"] = ("labels are a classifier's predictions; that classifier was trained on real "
                        "labelled data, so the labels carry real-label knowledge")
    return info


def check_out(out, overwrite: bool = False) -> Path:
    """`out` may be new, an empty folder, or (with overwrite) a folder to replace."""
    out = Path(out).resolve()  # "." or "runs/set/" still name a folder with a parent to rename in
    if not out.name:
        raise UsageError(f"--out {out} is the file-system root; choose a folder path")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out} is not empty; add --overwrite to replace it or choose another --out")
    return out


def save_image_folder(result: Synthetic, out, info: dict, overwrite: bool = False) -> Path:
    """Write `result` as DIR/<class>/<index>.png + DIR/manifest.json, atomically: everything goes into
    `.DIR.tmp-<pid>` beside DIR, which then replaces DIR (a replaced DIR is moved aside first and
    removed last). On any error the temporary folder is removed and DIR is as it was."""
    from PIL import Image
    out = check_out(out, overwrite)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    names = class_names(result.num_classes)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        arr = result.images.permute(0, 2, 3, 1).numpy()  # (n, H, W, C) for Pillow
        mode = {1: "L", 3: "RGB"}.get(arr.shape[-1])
        if mode is None:
            raise UsageError(f"PNG images need 1 or 3 channels, these have {arr.shape[-1]}")
        w = len(str(max(result.counts()) - 1))
        seen = [0] * result.num_classes
        for c in names:
            (tmp / c).mkdir()
        for img, c in zip(arr, result.labels.tolist()):
            Image.fromarray(img[..., 0] if mode == "L" else img, mode).save(tmp / names[c] / f"{seen[c]:0{w}d}.png")
            seen[c] += 1
        atomic_write_json(tmp / "manifest.json", info, durable=False)
        fsync_path(tmp)
        if out.is_dir() and any(out.iterdir()):
            os.replace(out, old)
        os.replace(tmp, out)  # over an empty folder or none
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise UsageError(f"cannot write {out}: {e.strerror or e}; choose another --out") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    fsync_path(out.parent)
    return out


def read_manifest(folder) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())
