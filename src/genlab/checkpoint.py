"""Crash-safe checkpoints: safetensors + JSON, no pickle.

    RUN/ckpt-00001000/  model.safetensors   G, D, G_ema, buffers (model.state_dict())
                        optim.safetensors   every optimiser's tensor state, "<name>.<idx>.<key>"
                        rng.safetensors     RNG states (torch global, the training noise generator)
                        state.json          step, data order, config, optimiser hyper-parameters, versions
                        MANIFEST.json       sha256 of each file above; written last
    RUN/latest          text: the name of the newest committed checkpoint

A checkpoint is written into `.tmp-ckpt-*`, every file fsynced, the manifest last, then the folder is
renamed into place and `latest` is replaced with os.replace; older checkpoints are pruned only after
that (each renamed out of `ckpt-*` first, so a half-deleted one never looks committed). A folder whose
manifest is missing or does not verify is ignored: genlab resumes from the newest checkpoint that
verifies (`latest` names it for people and tools), so a crash at any instant, or a full disk, leaves
the previous checkpoint usable. Loaded tensors are checked against the config (names, shapes, dtypes)
and for finite values; nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .io import atomic_write_text, fsync_path, sha256_file
from .registry import UsageError

FORMAT = 1
FILES = ("model.safetensors", "optim.safetensors", "rng.safetensors", "state.json")


def _write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


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
    """Commit checkpoint `step` atomically; prune older ones only after it is committed. An OSError
    (full disk, read-only folder) removes the partial folder and raises UsageError; the checkpoints
    already committed are untouched."""
    run = Path(run)
    name = f"ckpt-{step:08d}"
    tmp, final = run / f".tmp-{name}-{os.getpid()}", run / name
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  tmp / "model.safetensors")
        optim_tensors, optim_meta = _flatten_optim(opts)
        save_file(optim_tensors, tmp / "optim.safetensors")
        save_file({k: v.contiguous() for k, v in rng.items()}, tmp / "rng.safetensors")
        _write_json(tmp / "state.json", {**state, "step": step, "optim": optim_meta, "format": FORMAT})
        for f in FILES[:3]:
            fsync_path(tmp / f)
        _write_json(tmp / "MANIFEST.json", {"format": FORMAT, "files": {f: sha256_file(tmp / f) for f in FILES}})
        fsync_path(tmp)
        if final.exists():  # a folder of this step that does not verify (latest() skipped it)
            _discard(final)
        os.replace(tmp, final)
        fsync_path(run)
        atomic_write_text(run / "latest", name + "\n")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UsageError(f"could not write checkpoint {name} in {run}: {e.strerror or e}; "
                         f"{intact(run)}; free space (or fix the folder) and continue with --resume") from None
    older = [p for p in committed(run) if p.name < name]
    for old in older[:max(len(older) - (keep_last - 1), 0)]:
        _discard(old)
    return final


def intact(run: Path) -> str:
    c = latest(run, warn=False)
    return f"last committed checkpoint: {c.name if c else 'none'} (intact)"


def _discard(ckpt: Path) -> None:
    """Uncommit atomically (rename to a leftover name that clean_leftovers removes), then delete."""
    trash = ckpt.with_name(f".tmp-old-{ckpt.name}-{os.getpid()}")
    try:
        os.replace(ckpt, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def verify(ckpt: Path) -> bool:
    try:
        manifest = json.loads((ckpt / "MANIFEST.json").read_text())
        files = manifest["files"]
        return (manifest["format"] == FORMAT and set(files) == set(FILES)
                and all(sha256_file(ckpt / f) == h for f, h in files.items()))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def committed(run: Path) -> list[Path]:
    """Checkpoint folders with a manifest, oldest first (by step, from the zero-padded name)."""
    return sorted(p for p in Path(run).glob("ckpt-*") if (p / "MANIFEST.json").is_file())


def clean_leftovers(run: Path) -> None:
    """Remove what an interrupted writer left: `.tmp-*` folders and `.<name>.tmp-<pid>` files."""
    for p in list(Path(run).glob(".tmp-*")) + list(Path(run).glob(".*.tmp-*")):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


class CheckpointWarning(UserWarning):
    pass


def latest(run: Path, warn: bool = True) -> Path | None:
    """The newest checkpoint whose manifest verifies. When newer ones do not verify (corrupt or
    tampered), the previous one, with a warning naming them."""
    found = list(reversed(committed(run)))
    for i, c in enumerate(found):
        if verify(c):
            if i and warn:
                warnings.warn(f"checkpoint {', '.join(p.name for p in found[:i])} in {run} does not "
                              f"verify (corrupt or altered); using {c.name}", CheckpointWarning)
            return c
    if found and warn:
        warnings.warn(f"no checkpoint in {run} verifies ({', '.join(p.name for p in found)})",
                      CheckpointWarning)
    return None


def load(ckpt: Path) -> tuple[dict, dict, dict, dict]:
    """(model tensors, optimiser tensors, rng tensors, state) of a verified checkpoint."""
    if not verify(ckpt):
        raise UsageError(f"checkpoint {ckpt} is incomplete or corrupt (its MANIFEST does not verify)")
    try:
        out = (load_file(ckpt / "model.safetensors"), load_file(ckpt / "optim.safetensors"),
               load_file(ckpt / "rng.safetensors"), json.loads((ckpt / "state.json").read_text()))
    except (SafetensorError, ValueError, OSError) as e:
        raise UsageError(f"checkpoint {ckpt} could not be read: {e}") from None
    state = out[3]
    if not (isinstance(state, dict) and isinstance(state.get("step"), int) and state["step"] >= 0
            and isinstance(state.get("config"), dict) and isinstance(state.get("model"), str)
            and isinstance(state.get("data"), dict)):
        raise UsageError(f"checkpoint {ckpt}: state.json lacks a valid step, model, config or data")
    return out


def restore(ckpt: Path, model: torch.nn.Module, opts: dict) -> tuple[dict, dict]:
    """Load a checkpoint into `model` and `opts`, every tensor checked first; -> (rng tensors, state)."""
    tensors, optim_t, rng, state = load(ckpt)
    check_tensors(model, tensors, ckpt)
    check_optim(opts, optim_t, state, ckpt)
    model.load_state_dict(tensors)
    try:
        for name, o in opts.items():
            o.load_state_dict(_unflatten_optim(optim_t, state["optim"], name))
            for p, st in o.state.items():  # moments in their parameter's layout (channels_last), as
                for k, v in st.items():    # an uninterrupted run has them: same kernels, same bits
                    if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                        st[k] = torch.empty_like(p).copy_(v)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise UsageError(f"checkpoint {ckpt}: optimiser state does not fit the model ({e})") from None
    return rng, state


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


def check_optim(opts: dict, tensors: dict, state: dict, source) -> None:
    """Every optimiser tensor belongs to a parameter, has its shape (or is a scalar) and is finite."""
    params = {n: [p for g in o.param_groups for p in g["params"]] for n, o in opts.items()}
    if not isinstance(state.get("optim"), dict) or set(state["optim"]) != set(opts):
        raise UsageError(f"{source}: optimiser state does not name the optimisers {sorted(opts)}")
    for key, v in tensors.items():
        name, idx, _ = (key.split(".", 2) + ["", ""])[:3]
        ps = params.get(name, [])
        if not idx.isdigit() or int(idx) >= len(ps) or v.shape not in (ps[int(idx)].shape, ()):
            raise UsageError(f"{source}: optimiser tensor {key} {tuple(v.shape)} fits no parameter")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise UsageError(f"{source}: optimiser tensor {key} holds non-finite values")


def check_rng(rng: dict, expected: dict, source) -> None:
    """RNG states of the same kinds and sizes as this process's (torch.set_rng_state trusts its input)."""
    for k, v in expected.items():
        if k not in rng or rng[k].dtype != v.dtype or rng[k].shape != v.shape:
            raise UsageError(f"{source}: RNG state {k!r} is missing or malformed")


def finite(model: torch.nn.Module) -> bool:
    """All floating-point weights and buffers finite (a checkpoint is only committed when they are)."""
    return all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point())
