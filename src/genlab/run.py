"""A run folder: resolving its config (defaults < config file < options; saved config on resume),
preparing the folder, and loading a trained model back from it."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import precision
from .config import TrainConfig, budget_fields, build, load_file, split_keys, to_dict
from .data import Dataset, load_data
from .io import atomic_write_text
from .models import MODELS, place
from .registry import UsageError

GENLAB_FILES = ("config.json", "latest", "metrics.jsonl", "samples.png", "losses.png",
                "reconstructions.png", "skipped_images.txt")
GENLAB_DIRS = ("samples", "tb")


def resolve(model: str | None, options: dict, config_file: str | None, preset: str | None,
            resume: bool, overwrite: bool = False):
    """-> (model name, TrainConfig, model config, run folder, checkpoint to resume from or None)."""
    if resume and overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite replaces it: choose one")
    values = load_file(config_file) if config_file else {}
    if not isinstance(values, dict):
        raise UsageError(f"config file {config_file} must hold a table of options, "
                         f"not a {type(values).__name__}")
    values = dict(values)
    values.update({k: v for k, v in options.items() if v is not None})
    if not resume:
        if model is None:
            raise UsageError(f"name a model to train; known: {', '.join(sorted(MODELS))}")
        cls = MODELS[model]
        t_vals, m_vals = split_keys(values, [TrainConfig, cls], config_file or "options")
        tcfg, mcfg = build(TrainConfig, t_vals), build(cls, m_vals, preset)
        if tcfg.data_dir:  # saved absolute: --resume from another working directory finds the data
            tcfg.data_dir = str(Path(tcfg.data_dir).expanduser().absolute())
        run = Path(tcfg.out or f"runs/{model}")
        tcfg.out = str(run)
        return model, tcfg, mcfg, run, None
    run = Path(values.get("out") or f"runs/{model}")
    saved_path = run / "config.json"
    if not saved_path.is_file():
        raise UsageError(f"nothing to resume in {run} (no config.json); train without --resume first")
    try:
        saved = json.loads(saved_path.read_text())
        saved["model"], saved["train"], saved["model_config"]
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{saved_path} is not a genlab run config; start a new run with "
                         f"another --out") from None
    if model is not None and model != saved["model"]:
        raise UsageError(f"{run} holds a {saved['model']!r} run, not {model!r}")
    model = saved["model"]
    cls = MODELS[model]
    t_vals, m_vals = split_keys(values, [TrainConfig, cls], config_file or "options")
    if preset:  # a preset given again on resume must agree with the saved config, like any option
        build(cls, {}, preset)  # unknown preset -> UsageError
        m_vals = {**cls.presets[preset], **m_vals}
    tcfg = build(TrainConfig, {**saved["train"], **{k: v for k, v in t_vals.items()
                                                    if k in budget_fields(TrainConfig)}})
    mcfg = build(cls, saved["model_config"])
    for cfg, vals, allowed in ((tcfg, t_vals, budget_fields(TrainConfig)), (mcfg, m_vals, set())):
        for k, v in vals.items():
            if k not in allowed and build(type(cfg), {**to_dict(cfg), k: v}).__dict__[k] != getattr(cfg, k):
                raise UsageError(f"--{k.replace('_', '-')} {v} differs from the saved run "
                                 f"({getattr(cfg, k)}); a resumed run keeps its config: drop the flag "
                                 f"or start a new run with another --out")
    tcfg.out = str(run)
    return model, tcfg, mcfg, run, ckpt.latest(run)


def memory_bytes() -> int:
    """Physical memory of this machine (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_model_size(mcfg, shape, num_classes: int) -> None:
    """Refuse a model whose training state cannot fit in memory, before allocating it: the model is
    built on the meta device (shapes only) and its parameters counted; training holds each one ~9
    times in fp32 (weights, gradient, 2 Adam moments, EMA, the step snapshot's copies)."""
    with torch.device("meta"):
        n = sum(p.numel() for p in mcfg.build(shape, num_classes).parameters())
    need, have = 9 * 4 * n, memory_bytes()
    if have and need > 0.8 * have:
        raise UsageError(f"this model has {n:,} parameters and needs ~{need / 2**30:,.0f} GiB to train, "
                         f"more than this machine's {have / 2**30:.0f} GiB: choose smaller sizes "
                         f"(--z-dim, widths, --image-size)")


def prepare_run(run: Path, name: str, tcfg, mcfg, resume: bool, overwrite: bool,
                choice: precision.Choice | None = None) -> None:
    has_run = run.is_dir() and (any((run / f).exists() for f in ("config.json", "latest"))
                                or bool(ckpt.committed(run)))
    if has_run and not resume:
        if not overwrite:
            raise UsageError(f"{run} already holds a run; add --resume to continue it or "
                             f"--overwrite to replace it (or choose another --out)")
        for p in list(run.glob("ckpt-*")) + [run / d for d in GENLAB_DIRS]:
            shutil.rmtree(p, ignore_errors=True)
        for f in GENLAB_FILES:
            (run / f).unlink(missing_ok=True)
    try:
        run.mkdir(parents=True, exist_ok=True)
        ckpt.clean_leftovers(run)
        if not resume or not (run / "config.json").exists():
            atomic_write_text(run / "config.json", json.dumps(
                {"model": name, "train": to_dict(tcfg), "model_config": to_dict(mcfg),
                 "resolved": choice.to_dict() if choice else None}, indent=1) + "\n")
    except OSError as e:
        raise UsageError(f"cannot write the run folder {run}: {e.strerror}; choose another --out") from None


def load(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """A trained model from a run folder (its newest verified checkpoint) or a checkpoint folder, in
    eval mode, with the attributes of models.Loaded (name, run_dir, checkpoint, step, train_config);
    `model.sample(n, generator=...)` returns (n, C, H, W) in [-1, 1]. The run's recorded
    --precision is resolved for this machine and `device` as training resolves it (precision.py)."""
    path = Path(path)
    c = path if (path / "MANIFEST.json").is_file() else ckpt.latest(path)
    if c is None:
        raise UsageError(f"no checkpoint in {path}; train first (genlab train MODEL --out {path})")
    tensors, _, _, state = ckpt.load(c)
    cls = MODELS[state["model"]]
    try:
        cfg = build(cls, state["config"]["model"])
    except UsageError as e:
        raise UsageError(f"{c} was saved with options this genlab does not have ({e}); use the genlab "
                         f"version that wrote it ({state.get('versions', {}).get('genlab', '?')})") from None
    model = cfg.build(tuple(state["shape"]), state["num_classes"])
    ckpt.check_tensors(model, tensors, c)
    model.load_state_dict(tensors)
    # the models.Loaded contract: what the model is and where it came from
    model.name, model.run_dir, model.checkpoint, model.step = state["model"], path, c, state["step"]
    model.train_config = state["config"]["train"]
    choice = precision.resolve(model.train_config.get("precision", "fp32"), device, state.get("precision"))
    model.autocast_dtype = choice.dtype
    return place(model, choice.device).eval()


def training_data(tc: dict, split: str = "train") -> Dataset:
    """The data a run was trained on, from its recorded train config (`models.Loaded.train_config`):
    its source, folder, image size and classes, and its policy for unreadable files. Never downloads."""
    return load_data(tc["data"], tc.get("data_dir"), split, tc.get("image_size"), False,
                     tc.get("classes"), strict=tc.get("strict", False))
