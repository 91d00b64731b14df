"""Reference statistics: what generated images are scored against.

    from genlab.reference import reference_stats
    ref = reference_stats("mnist-5k", "test")     # features, probs, labels, mu, sigma, k=3 radii, ...

The reference for a run's data is its test split (mnist-5k, a subset of MNIST's training images, is
scored against the MNIST test split; npz and folder data, having no held-out split, against
themselves). Features, class probabilities and the Gaussian statistics of a reference split are cached
on disk per (data, split, image size, extractor, weights sha256, the data's content) in $GENLAB_CACHE/ref (default
~/.cache/genlab/ref) as plain npz files (loaded with allow_pickle=False). `genlab eval` (evaluate.py)
and the training loop's health check read them from here.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from .io import atomic_save_npz, cache_root
from .registry import UsageError

REFERENCE_DATA = {"mnist-5k": "mnist"}  # data without a test split of its own -> whose test split
NO_TEST_SPLIT = ("npz", "folder")     # file sources: the reference is the data itself (not held out)
CACHE_VERSION = 3  # 3: keyed by the data's content, stores the image shape
ARRAYS = ("features", "probs", "labels", "mu", "sigma", "knn_radii_sq_k3")  # what a cache file holds


def cache_dir() -> Path:
    """$GENLAB_CACHE/ref, default ~/.cache/genlab/ref (read at call time)."""
    return cache_root() / "ref"


def reference_source(data: str, split: str = "test") -> tuple[str, str]:
    """(data source, split) that serves as `data`'s `split`: mnist-5k's test split is MNIST's; npz
    and folder data have no held-out split, so their 'test' reference is the data itself."""
    if split == "test" and data in NO_TEST_SPLIT:
        return data, "train"
    return (REFERENCE_DATA.get(data, data) if split == "test" else data), split


def _data_key(data: str, src: str, split: str, data_dir: str | None, image_size) -> tuple[str, object]:
    """(key, images or None): the cache is keyed by the data itself, so that another folder, a changed
    file or another --data-dir never reuses statistics of different images. Image sets held in memory
    are hashed (MNIST's test split: ~0.2 s to read, 10 ms to hash); a folder of image files, which
    would have to be decoded, by every file's path, size and mtime instead."""
    if src == "folder" and data_dir:
        root = Path(data_dir).expanduser().resolve()
        h = hashlib.sha256(str(root).encode())
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16], None
    ds = _load_reference_images(data, src, split, data_dir, image_size)
    return hashlib.sha256(ds.images.numpy().tobytes()).hexdigest()[:16], ds


def _str(a) -> str:
    return str(a[()])


def reference_stats(data: str, split: str = "test", data_dir: str | None = None,
                    image_size: int | None = None, features: str | None = None,
                    use_cache: bool = True, weights=None, progress=None) -> dict:
    """Features, probs, labels, the Gaussian statistics (mu, sigma) and the k=3 nearest-neighbour radii
    of a reference split, from the cache when present, else computed and cached. Keys: ARRAYS, name,
    weights_sha256 (as `metrics.extract`), and data, split, n, image_size, images_sha256, cache,
    cached (bool). `data` is the run's data name; see `reference_source`. `weights`: the weights file
    of an extractor that locates its own (`Extractor.locate`; default: where it looks by itself);
    `progress`: a callable given its progress lines (slow extractors report them)."""
    import numpy as np
    from .metrics import DEFAULT_FOR_DATA, FEATURES, extract
    src, sp = reference_source(data, split)
    features = features or DEFAULT_FOR_DATA.get(src) or DEFAULT_FOR_DATA.get(data)
    if features is None:
        raise UsageError(f"no default feature extractor for data {src!r}; pass --features NAME "
                         f"(known: {', '.join(sorted(FEATURES))})")
    # unknown -> one-line error listing the known extractors; weights located and verified first
    options, sha, _ = FEATURES[features].resolve(weights, progress)
    sha = sha or "none"
    size = f"{image_size}px" if image_size else "native"
    key, ds = _data_key(data, src, sp, data_dir, image_size) if use_cache else ("", None)
    path = cache_dir() / f"{src}-{sp}-{size}-{features}-{sha[:12]}-{key}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                if int(f["version"]) == CACHE_VERSION and _str(f["weights_sha256"]) == sha:
                    return {**{k: f[k] for k in ARRAYS}, "name": _str(f["name"]),
                            "weights_sha256": sha, "data": src, "split": sp, "n": int(len(f["features"])),
                            "image_size": image_size, "images_sha256": _str(f["images_sha256"]),
                            "shape": tuple(int(v) for v in f["shape"]), "cache": str(path), "cached": True}
        except (OSError, ValueError, KeyError):
            pass  # a broken or foreign cache file is recomputed and replaced
    ds = ds or _load_reference_images(data, src, sp, data_dir, image_size)
    out = extract(features, ds.images, **options)
    from .metrics.fid import feature_stats
    from .metrics.pr import knn_radii_sq
    mu, sigma = feature_stats(out["features"])
    radii = knn_radii_sq(out["features"], 3) if len(ds) > 3 else np.zeros(len(ds))
    images_sha = hashlib.sha256(ds.images.numpy().tobytes()).hexdigest()
    arrays = {"features": out["features"], "probs": out["probs"], "labels": ds.labels.numpy(),
              "mu": mu, "sigma": sigma, "knn_radii_sq_k3": radii, "name": np.array(out["name"]), "weights_sha256": np.array(sha),
              "images_sha256": np.array(images_sha), "version": np.array(CACHE_VERSION),
              "shape": np.array(ds.shape)}
    if use_cache:
        try:
            atomic_save_npz(path, **arrays)
        except OSError as e:  # a read-only cache only costs speed
            print(f"genlab: warning: cannot write the reference cache {path}: {e.strerror}", file=sys.stderr)
    return {**{k: arrays[k] for k in ARRAYS},
            "name": out["name"], "weights_sha256": sha, "data": src, "split": sp, "n": len(ds),
            "image_size": image_size, "images_sha256": images_sha, "shape": tuple(ds.shape),
            "cache": str(path), "cached": False}


def _load_reference_images(data: str, src: str, split: str, data_dir, image_size):
    from .data import load_data
    try:
        return load_data(src, data_dir=data_dir, split=split, image_size=image_size)
    except UsageError as e:
        what = f"the {split} split of {src}" + (f" (the reference for {data})" if src != data else "")
        raise UsageError(f"cannot load {what}: {e}") from None


def reference_info(ref: dict) -> dict:
    return {"data": ref["data"], "split": ref["split"], "n": int(ref["n"]), "image_size": ref["image_size"],
            "images_sha256": ref["images_sha256"]}
