"""Crash-safe checkpoints: safetensors + JSON, no pickle.

    RUN/ckpt-00001000/  model.safetensors   G, D, G_ema, buffers (model.state_dict())
                        optim.safetensors   every optimiser's tensor state, "<name>.<idx>.<key>"
                        rng.safetensors     RNG states (torch global, the training noise generator)
                        state.json          step, data order, config, optimiser hyper-parameters, versions
                        MANIFEST.json       sha256 of each file above; written last
    RUN/latest          text: the name of the newest committed checkpoint

A checkpoint is written into `.tmp-ckpt-*`, every file fsynced, the manifest last, then the folder is
renamed into place and `latest` is replaced with os.replace. A folder whose manifest is missing or does
not verify is ignored, so a crash at any instant leaves the previous checkpoint usable.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .registry import UsageError

FORMAT = 1
FILES = ("model.safetensors", "optim.safetensors", "rng.safetensors", "state.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


def _flatten_optim(opts: dict) -> tuple[dict, dict]:
    tensors, meta = {}, {}
    for name, o in opts.items():
        sd = o.state_dict()
        scalars = {}
        for idx, st in sd["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"{name}.{idx}.{k}"] = v.detach().cpu().contiguous()
                else:
                    scalars[f"{idx}.{k}"] = v
        meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    return tensors, meta


def _unflatten_optim(tensors: dict, meta: dict, name: str) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        n, idx, k = key.split(".", 2)
        if n == name:
            state.setdefault(int(idx), {})[k] = v
    for key, v in meta[name]["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta[name]["param_groups"]}


def save(run: Path, step: int, model: torch.nn.Module, opts: dict, rng: dict, state: dict,
         keep_last: int = 2) -> Path:
    """Commit checkpoint `step` atomically; prune older ones only after it is committed."""
    run = Path(run)
    name = f"ckpt-{step:08d}"
    tmp = run / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              tmp / "model.safetensors")
    optim_tensors, optim_meta = _flatten_optim(opts)
    save_file(optim_tensors, tmp / "optim.safetensors")
    save_file({k: v.contiguous() for k, v in rng.items()}, tmp / "rng.safetensors")
    _write_json(tmp / "state.json", {**state, "step": step, "optim": optim_meta, "format": FORMAT})
    for f in FILES[:3]:
        _fsync(tmp / f)
    _write_json(tmp / "MANIFEST.json", {"format": FORMAT, "files": {f: _sha256(tmp / f) for f in FILES}})
    _fsync(tmp)
    final = run / name
    if final.exists():  # re-committing the same step (a resumed run that stopped at once)
        trash = run / f".tmp-old-{name}-{os.getpid()}"
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp, final)
    _fsync(run)
    atomic_write_text(run / "latest", name + "\n")
    for old in committed(run)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(ckpt: Path) -> bool:
    try:
        manifest = json.loads((ckpt / "MANIFEST.json").read_text())
        files = manifest["files"]
        return set(files) == set(FILES) and all(_sha256(ckpt / f) == h for f, h in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def committed(run: Path) -> list[Path]:
    """Checkpoint folders with a manifest, oldest first (by step, from the zero-padded name)."""
    return sorted(p for p in Path(run).glob("ckpt-*") if (p / "MANIFEST.json").is_file())


def clean_leftovers(run: Path) -> None:
    for p in Path(run).glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def latest(run: Path) -> Path | None:
    """The newest checkpoint whose manifest verifies; a corrupt newest one falls back to the previous
    with a warning."""
    run = Path(run)
    pointer = run / "latest"
    named = run / pointer.read_text().strip() if pointer.is_file() else None
    candidates = ([named] if named else []) + list(reversed(committed(run)))
    for i, c in enumerate(candidates):
        if c is not None and c.is_dir() and verify(c):
            if named is not None and c != named:
                warnings.warn(f"checkpoint {named.name} does not verify; using {c.name}")
            return c
    return None


def load(ckpt: Path) -> tuple[dict, dict, dict, dict]:
    """(model tensors, optimiser tensors, rng tensors, state) of a verified checkpoint."""
    if not verify(ckpt):
        raise UsageError(f"checkpoint {ckpt} is incomplete or corrupt (its MANIFEST does not verify)")
    try:
        return (load_file(ckpt / "model.safetensors"), load_file(ckpt / "optim.safetensors"),
                load_file(ckpt / "rng.safetensors"), json.loads((ckpt / "state.json").read_text()))
    except (SafetensorError, ValueError) as e:
        raise UsageError(f"checkpoint {ckpt} could not be read: {e}") from None


def load_optim(opts: dict, tensors: dict, state: dict) -> None:
    for name, o in opts.items():
        o.load_state_dict(_unflatten_optim(tensors, state["optim"], name))


def check_tensors(model: torch.nn.Module, tensors: dict, source) -> None:
    """Same names, shapes and dtypes as the model built from the config, and finite values."""
    expected = model.state_dict()
    if set(expected) != set(tensors):
        missing, extra = set(expected) - set(tensors), set(tensors) - set(expected)
        raise UsageError(f"{source} does not match its config (missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(extra)[:3]})")
    for k, v in tensors.items():
        if v.shape != expected[k].shape or v.dtype != expected[k].dtype:
            raise UsageError(f"{source}: tensor {k} is {v.dtype} {tuple(v.shape)}, expected "
                             f"{expected[k].dtype} {tuple(expected[k].shape)}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise UsageError(f"{source}: tensor {k} holds non-finite values")
