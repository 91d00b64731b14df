"""Labels a model can use (`check_labels`, applied to every data source when it is loaded) and class
selection, `--classes 0,1,2` (a TrainConfig option): training on some labels of a labelled
data set only, e.g. one MNIST digit as the normal class of an anomaly detector (apps/anomaly.py,
the one-class protocol of Ruff et al. 2018) or nine of them with the tenth held out (Akcay et al.
2018). Labels keep their values, so a conditional model still reads label k as class k."""
from __future__ import annotations

import numpy as np
import torch

from .registry import UsageError

MAX_CLASSES = 1000  # a label is an embedding row: label 10**9 would allocate gigabytes


def check_labels(labels, name: str) -> np.ndarray:
    """Labels a model can use, as int64: whole numbers (bool, int, or integral floats), -1 for an
    unlabelled image, classes 0..MAX_CLASSES-1. One-line UsageError naming the fix otherwise."""
    y = np.asarray(labels)
    if y.dtype.kind not in "biuf":
        raise UsageError(f"{name} labels must be integers, got {y.dtype} values")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise UsageError(f"{name} labels must be whole numbers (class indices), got e.g. "
                         f"{y[~(np.isfinite(y) & (y == np.round(y)))][0]}")
    if len(y) and (y.min() < -1 or y.max() >= MAX_CLASSES):
        raise UsageError(f"{name} labels must be class indices 0..{MAX_CLASSES - 1} (-1 = unlabelled), "
                         f"got {y.min():g}..{y.max():g}: renumber the classes")
    return y.astype(np.int64)


def parse_classes(value) -> list[int]:
    """--classes "0,1,2" (or a list from a config file / Python) -> sorted distinct ints >= 0."""
    items = value.split(",") if isinstance(value, str) else \
        [value] if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        if isinstance(items, (str, bytes)) or not items or any(isinstance(c, (bool, float)) for c in items):
            raise ValueError
        out = sorted({int(str(c).strip()) for c in items})
    except (TypeError, ValueError):
        raise UsageError(f"--classes must be labels separated by commas, e.g. 0,1,2, got {value!r}") from None
    if out[0] < 0:
        raise UsageError(f"--classes must be labels >= 0, got {value!r}")
    return out


def select_classes(ds, classes):
    """The images of `ds` whose label is in `classes` (--classes; e.g. one MNIST digit as the normal
    class of an anomaly detector). Labels keep their values and `num_classes` is unchanged, so a
    conditional model still reads label k as class k. One-line errors for unlabelled data and for a
    class the data does not have."""
    if classes is None:
        return ds
    keep_labels = torch.tensor(parse_classes(classes))
    present = sorted(set(ds.labels.unique().tolist()) - {-1})
    if not present:
        raise UsageError(f"--classes needs labelled data, and {ds.name} has no labels; drop --classes "
                         f"(or use a folder with one sub-folder per class)")
    missing = [c for c in keep_labels.tolist() if c not in present]
    if missing:
        have = f"{present[0]}..{present[-1]}" if present == list(range(present[0], present[-1] + 1)) \
            else ",".join(map(str, present))
        raise UsageError(f"--classes {','.join(map(str, missing))}: not a label of {ds.name} "
                         f"(its labels: {have})")
    keep = torch.isin(ds.labels, keep_labels)
    ds.images, ds.labels = ds.images[keep], ds.labels[keep]
    return ds
