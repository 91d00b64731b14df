"""Generic file helpers: hashing, atomic writes, the cache root. Imports nothing else of genlab (and
no torch), so every module can use it without an import cycle.

An atomic write goes to a temporary file next to the target (`.<name>.tmp-<pid>`, a name that
`checkpoint.clean_leftovers` removes when a writer was killed), is fsynced, then renamed over the
target with os.replace: a reader sees the old file or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def sha256_file(path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_path(path) -> None:
    """fsync a file or a folder (a folder: so that a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path, write, mode: str = "wb", durable: bool = True) -> Path:
    """Call `write(file_object)` on a temporary file, then rename it to `path` (parents created).
    `durable`: fsync the file and its folder (checkpoints and run files); caches can skip it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, mode) as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)
    return path


def atomic_write_bytes(path, data: bytes, durable: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(data), "wb", durable)


def atomic_write_text(path, text: str, durable: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(text), "w", durable)


def atomic_write_json(path, obj, durable: bool = True, **dump_options) -> Path:
    """JSON (indent=1, NaN refused) plus a final newline, written atomically."""
    options = {"indent": 1, "allow_nan": False, **dump_options}
    return atomic_write_text(path, json.dumps(obj, **options) + "\n", durable)


def atomic_save_npz(path, durable: bool = False, **arrays) -> Path:
    """numpy.savez to a temporary file, then renamed into place (readers never see half a file)."""
    import numpy as np
    return atomic_write(path, lambda f: np.savez(f, **arrays), "wb", durable)


def cache_root() -> Path:
    """$GENLAB_CACHE, default ~/.cache/genlab (read at call time): reference statistics live in ref/;
    a feature extractor whose weights are not shipped looks for them in a folder of its own here."""
    return Path(os.environ.get("GENLAB_CACHE") or Path.home() / ".cache" / "genlab").expanduser()
