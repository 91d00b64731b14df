"""The one training loop. It never names a model type: it builds whatever MODELS returns and calls
`train_step` until a budget runs out, seeding, logging and saving each in one place."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .data import load_data, to_float
from .guard import Diverged, NonFiniteStep, StepSnapshot
from .logger import RunLogger
from .models import MODELS
from .run import prepare_run, resolve
from .sample import draw, save_grid

MAX_CONSECUTIVE_SKIPS = 20


class Batches:
    """Endless batches in a seeded order, a new permutation per epoch (drop-last). Its state, (epoch,
    position), is part of every checkpoint, so a resumed run sees exactly the batches it would have."""

    def __init__(self, ds, batch_size: int, seed: int, device, epoch: int = 0, pos: int = 0):
        if batch_size > len(ds):
            from .registry import UsageError
            raise UsageError(f"--batch-size {batch_size} is larger than the data ({len(ds)} images)")
        self.ds, self.b, self.seed, self.device = ds, batch_size, seed, device
        self.epoch, self.pos = epoch, pos
        self._perm_epoch, self._perm = -1, None

    def __iter__(self):
        return self

    def __next__(self):
        if self.pos + self.b > len(self.ds):
            self.epoch, self.pos = self.epoch + 1, 0
        if self._perm_epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.ds), generator=g), self.epoch
        idx = self._perm[self.pos:self.pos + self.b]
        self.pos += self.b
        x = to_float(self.ds.images[idx]).to(self.device, non_blocking=True)  # (B, C, H, W) in [-1, 1]
        return x, self.ds.labels[idx].to(self.device, non_blocking=True)

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}


class StopFlag:
    """SIGINT/SIGTERM finish the current step, commit a checkpoint and exit 0."""

    def __init__(self):
        self.set, self._old = False, {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame):
        self.set = True

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def train(model: str | None = None, *, resume: bool = False, overwrite: bool = False,
          config_file: str | None = None, preset: str | None = None, quiet: bool = False,
          **options) -> Path:
    """Train `model` (a MODELS name) with CLI-equivalent `options`; returns the run folder."""
    name, tcfg, mcfg, run, start = resolve(model, options, config_file, preset, resume)
    torch.set_num_threads(tcfg.threads or os.cpu_count())
    device = torch.device("cuda" if tcfg.device == "auto" and torch.cuda.is_available()
                          else "cpu" if tcfg.device == "auto" else tcfg.device)
    ds = load_data(tcfg.data, tcfg.data_dir, "train", tcfg.image_size, tcfg.download)
    torch.manual_seed(tcfg.seed)  # the only seeding: initial weights; data order and noise below
    net = mcfg.build(ds.shape, ds.num_classes).to(device)
    prepare_run(run, name, tcfg, mcfg, resume, overwrite)  # only once data and model are valid
    net.autocast_dtype = torch.bfloat16 if tcfg.precision == "bf16" else None
    opts = net.configure_optimizers()
    noise = torch.Generator(device).manual_seed(tcfg.seed + 1)
    batches = Batches(ds, mcfg.batch_size, tcfg.seed, device)
    step, skipped = 0, 0
    if start is not None:  # resume: weights, optimisers, data order and RNG exactly as saved
        tensors, optim_t, rng, state = ckpt.load(start)
        ckpt.check_tensors(net, tensors, start)
        net.load_state_dict(tensors)
        ckpt.load_optim(opts, optim_t, state)
        torch.set_rng_state(rng["torch"])
        noise.set_state(rng["noise"])
        batches.epoch, batches.pos = state["data"]["epoch"], state["data"]["pos"]
        step, skipped = state["step"], state.get("skipped", 0)

    def save():
        state = {"model": name, "shape": list(ds.shape), "num_classes": ds.num_classes,
                 "data": batches.state(), "skipped": skipped, "threads": torch.get_num_threads(),
                 "config": {"train": ckpt_config(tcfg), "model": ckpt_config(mcfg)},
                 "versions": {"torch": torch.__version__, "genlab": version()}}
        ckpt.save(run, step, net, opts, {"torch": torch.get_rng_state(), "noise": noise.get_state()},
                  state, tcfg.keep_last)

    total = tcfg.max_steps or mcfg.steps
    log = RunLogger(run, step, total)
    snapshot, consecutive = StepSnapshot(net, opts), 0
    t0, saved_step = time.perf_counter(), step
    net.train()
    with StopFlag() as stop:
        while step < total and not stop.set:
            if tcfg.max_seconds is not None and time.perf_counter() - t0 >= tcfg.max_seconds:
                break
            snapshot.save()
            try:
                stats = net.train_step(batches, opts, noise)
            except NonFiniteStep as e:  # undo the whole step; its batch stays consumed
                snapshot.restore()
                skipped, consecutive = skipped + 1, consecutive + 1
                log.note(f"step {step + 1} skipped: {e} ({skipped} skipped so far)")
                if consecutive >= MAX_CONSECUTIVE_SKIPS:
                    raise Diverged(f"training diverged: {consecutive} consecutive non-finite "
                                       f"steps; last good checkpoint: {ckpt.latest(run)}") from None
                continue
            step, consecutive = step + 1, 0
            log.advance()
            if step % tcfg.log_every == 0 or step == total:
                log.log(step, {**stats, "skipped": skipped}, mcfg.batch_size)
            if tcfg.sample_every and step % tcfg.sample_every == 0:
                save_grid(draw(net, 100, tcfg.seed)[0], run / "samples" / f"step-{step:06d}.png", 10)
            if tcfg.ckpt_every and step % tcfg.ckpt_every == 0:
                save()
                saved_step = step
    if step != saved_step or ckpt.latest(run) is None:
        save()
    save_grid(draw(net, 100, tcfg.seed)[0], run / "samples.png", 10)
    log.close()
    if not quiet:
        print(f"trained {name} to step {step} in {time.perf_counter() - t0:.0f} s "
              f"({skipped} steps skipped)", flush=True)
    return run


def ckpt_config(cfg) -> dict:
    from .config import to_dict
    return to_dict(cfg)


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as v
    try:
        return v("genlab")
    except PackageNotFoundError:
        return "0+local"
