"""What the server holds of a run: its model (reloaded when the run's `latest` changes, so a run can
be watched while it trains; checkpoints are written atomically and `load` verifies them), the GANSpace
directions and the VAE's latent map derived from it, and the run's training files read safely
(metrics.jsonl tail-read, bounded)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..data import to_uint8
from ..io import atomic_save_npz, cache_root, sha256_file
from ..models import Autoencoder
from ..run import load, training_data
from . import space


class Served:
    """The model of a run and what is derived from it, reloaded when the run's newest checkpoint
    changes. Touched only from the Worker's thread."""

    def __init__(self, run: Path, k: int, map_size: int):
        self.run, self.k, self.map_size = Path(run), k, map_size
        self.model, self.key, self.checked, self._map = None, None, 0.0, None
        self.refresh(force=True)

    def _latest_key(self) -> str:
        try:
            return (self.run / "latest").read_text().strip()
        except OSError:
            return ""

    def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.checked < 1.0:
            return
        self.checked = time.monotonic()
        key = self._latest_key()
        if key == self.key and not force:
            return
        try:
            model = load(self.run)
        except Exception:
            if self.model is None:
                raise
            return  # a checkpoint being replaced: keep serving the one loaded
        self.model, self.key, self._map = model, key, None
        self.dirs = space.directions(model, self.k, generator=torch.Generator().manual_seed(0))

    def info(self) -> dict:
        m = self.model
        return {"model": m.name, "conditional": m.num_classes > 0, "num_classes": m.num_classes,
                "z_dim": m.z_dim, "shape": list(m.shape), "step": m.step,
                "autoencoder": isinstance(m, Autoencoder), "directions": len(self.dirs["u"]),
                "training": training(self.run)}

    def latent_map(self) -> dict:
        """The VAE's map, computed once per checkpoint and cached on disk by its manifest's hash."""
        if self._map is None:  # "map2": maps cached before the map honoured --classes are not reused
            cache = cache_root() / "serve" / f"map2-{sha256_file(self.model.checkpoint / 'MANIFEST.json')[:20]}-{self.map_size}.npz"
            try:
                with np.load(cache, allow_pickle=False) as f:
                    self._map = dict(f)
            except (OSError, ValueError):
                images, labels = self._map_images()
                self._map = {**space.latent_map(self.model, images), "labels": labels.numpy()}
                try:
                    atomic_save_npz(cache, **self._map)
                except OSError:
                    pass  # a read-only cache is only slower
        return self._map

    def _map_images(self):
        tc, g = self.model.train_config, torch.Generator().manual_seed(0)
        try:
            data = training_data(tc)  # with the run's --classes: the map shows what it learned
            idx = torch.randperm(len(data), generator=g)[:self.map_size]
            return data.images[idx], data.labels[idx]
        except Exception:  # the training data moved: map the model's own samples instead
            x = to_uint8(self.model.sample(self.map_size, generator=g))
            return x, torch.full((len(x),), -1)


def training(run: Path, within: float = 900.0) -> bool:
    """A run is training while metrics.jsonl is newer than samples.png (the loop writes samples.png
    last, after its final log line) and was written in the last `within` s (a killed run stops
    counting; on a loaded machine a log line can take minutes)."""
    try:
        logged = (run / "metrics.jsonl").stat().st_mtime
    except OSError:
        return False
    try:
        done = (run / "samples.png").stat().st_mtime >= logged
    except OSError:
        done = False
    return not done and time.time() - logged < within


def read_metrics(run: Path, rows: int, tail: int = 4 << 20) -> list[dict]:
    """The last rows of metrics.jsonl (at most `tail` bytes read), thinned evenly to `rows`."""
    try:
        with open(run / "metrics.jsonl", "rb") as f:
            f.seek(max(0, f.seek(0, 2) - tail))
            lines = f.read().decode("utf-8", "replace").splitlines()[1:] if f.tell() > tail else None
    except OSError:
        return []
    if lines is None:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    step = max(1, math.ceil(len(out) / rows))
    return out[::-1][::step][::-1]
