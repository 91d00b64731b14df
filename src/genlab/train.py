"""The one training loop. It never names a model type: it builds whatever MODELS returns and calls
`train_step` until a budget runs out, seeding, logging and saving each in one place."""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import distributed, precision
from .config import to_dict
from .data import load_data, to_float
from .guard import Diverged, NonFiniteStep, StepSnapshot, StopFlag
from .io import atomic_write_text
from .logger import RunLogger
from .metrics.health import health
from .models import Autoencoder, place
from .reference import reference_stats
from .registry import UsageError
from .run import check_model_size, prepare_run, resolve

MAX_CONSECUTIVE_SKIPS = 20  # K non-finite steps in a row roll back to the last good checkpoint...
MAX_ROLLBACKS = 3           # ...at most this many times before the run counts as diverged


class Batches:
    """Endless batches in a seeded order, a new permutation per epoch (drop-last). Its state, (epoch,
    position), is part of every checkpoint, so a resumed run sees exactly the batches it would have.
    Data-parallel (distributed.py): every rank walks the same global batches and takes its `rank`-th
    of `world` equal shards, so the state stays global and a run resumes with any number of ranks."""

    def __init__(self, ds, batch_size: int, seed: int, device, epoch: int = 0, pos: int = 0,
                 rank: int = 0, world: int = 1):
        if batch_size > len(ds):
            raise UsageError(f"--batch-size {batch_size} is larger than the data ({len(ds)} images)")
        self.ds, self.b, self.seed, self.device = ds, batch_size, seed, device
        self.epoch, self.pos = epoch, pos
        self.shard = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
        self._perm_epoch, self._perm = -1, None

    def __iter__(self):
        return self

    def __next__(self):
        if self.pos + self.b > len(self.ds):
            self.epoch, self.pos = self.epoch + 1, 0
        if self._perm_epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.ds), generator=g), self.epoch
        idx = self._perm[self.pos:self.pos + self.b][self.shard]  # (B,), or this rank's B / world
        self.pos += self.b
        x = to_float(self.ds.images[idx]).to(self.device, non_blocking=True)  # (B, C, H, W) in [-1, 1]
        return x, self.ds.labels[idx].to(self.device, non_blocking=True)

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}


def train(model: str | None = None, *, resume: bool = False, overwrite: bool = False,
          config_file: str | None = None, preset: str | None = None, quiet: bool = False,
          **options) -> Path:
    """Train `model` (a MODELS name) with CLI-equivalent `options`; returns the run folder."""
    world = distributed.world()  # torchrun's processes, or this one alone
    try:
        run = _train(world, model, resume, overwrite, config_file, preset, quiet or not world.main,
                     options)
    except BaseException:
        world.close(ok=False)
        raise
    world.close()
    return run


def _train(world, model, resume, overwrite, config_file, preset, quiet, options) -> Path:
    name, tcfg, mcfg, run, start = resolve(model, options, config_file, preset, resume, overwrite)
    torch.set_num_threads(world.threads(tcfg.threads))
    recorded = json.loads((start / "state.json").read_text()).get("precision") if start else None
    choice = precision.resolve(tcfg.precision, tcfg.device, recorded)  # bf16 only where native
    device = world.device(choice.device)
    world.check_batch(mcfg.batch_size)  # the global batch, split evenly over the processes
    ds = load_data(tcfg.data, tcfg.data_dir, "train", tcfg.image_size, tcfg.download, tcfg.classes,
                   strict=tcfg.strict)
    check_model_size(mcfg, ds.shape, ds.num_classes)  # before allocating: --z-dim 1e8 is 2.5 TB
    torch.manual_seed(tcfg.seed)  # the only seeding: initial weights; data order and noise below
    net = place(mcfg.build(ds.shape, ds.num_classes), device)
    batches = Batches(ds, mcfg.batch_size, tcfg.seed, device, rank=world.rank, world=world.size)
    ref = reference_stats(tcfg.data, "test", tcfg.data_dir, tcfg.image_size) \
        if tcfg.eval_every and world.main else None
    # auto on a bf16 CPU: this model's own step decides (every rank alike); a resumed run keeps its choice
    choice = precision.confirm(choice, tcfg.precision, step_probe(net, ds, mcfg.batch_size, device),
                               json.dumps([name, to_dict(mcfg), list(ds.shape), ds.num_classes, world.size]))
    if not world.all(choice.precision == "bf16") and choice.precision == "bf16":
        choice = precision.Choice(choice.device, "fp32", "fp32: another process measured bf16 slower",
                                  choice.step_speedup)
    if world.main:  # rank 0 alone writes the run folder
        prepare_run(run, name, tcfg, mcfg, resume, overwrite, choice)  # once data and model are valid
    net.autocast_dtype = choice.dtype
    opts = net.configure_optimizers()
    # every rank draws the global batch's noise and keeps its rows: z equals a 1-process run's
    noise = distributed.Shard(device, world.rank, world.size).manual_seed(tcfg.seed + 1)
    step, skipped = 0, 0
    if start is not None:  # resume: weights, optimisers, data order and RNG exactly as saved
        rng, state = ckpt.restore(start, net, opts)
        ckpt.check_rng(rng, {"torch": torch.get_rng_state(), "noise": noise.get_state()}, start)
        torch.set_rng_state(rng["torch"])
        noise.set_state(rng["noise"])
        batches.epoch, batches.pos = state["data"]["epoch"], state["data"]["pos"]
        step, skipped = state["step"], state.get("skipped", 0)
    world.wrap(net)  # DDP for G and D (each trainable child) on every rank, after a restore

    def save() -> bool:
        if not world.all(ckpt.finite(net)):  # a committed checkpoint is always a good one to roll back to
            log.note(f"step {step}: weights are not finite; no checkpoint committed")
            return False
        state = {"model": name, "shape": list(ds.shape), "num_classes": ds.num_classes,
                 "data": batches.state(), "skipped": skipped, "threads": torch.get_num_threads(),
                 "precision": choice.to_dict(), "processes": world.size,
                 "config": {"train": to_dict(tcfg), "model": to_dict(mcfg)},
                 "versions": {"torch": torch.__version__, "genlab": version()}}
        if world.main:  # the plain model's state: the keys and format of a 1-process run
            ckpt.save(run, step, net, opts, {"torch": torch.get_rng_state(), "noise": noise.get_state()},
                      state, tcfg.keep_last)
        return True

    total = tcfg.max_steps or mcfg.steps
    t0, saved_step = time.perf_counter(), step
    try:
        if world.main:
            write_skipped_list(run, ds.skipped, quiet)
        log = RunLogger(run, step, total, net.loss_stats, quiet) if world.main else distributed.NullLog()
        if not quiet:
            log.note(f"device {choice.device}, precision {choice.reason}")
        snapshot, consecutive, rollbacks = StepSnapshot(net, opts), 0, 0
        net.train()
        with StopFlag() as stop:
            while step < total:
                # all ranks stop after the same step: a signal or the clock may reach one rank first
                late = tcfg.max_seconds is not None and time.perf_counter() - t0 >= tcfg.max_seconds
                why = world.max(2 if stop.set else 1 if late else 0)  # 2: a signal, 1: the budget
                if why:
                    stop.set = why == 2
                    break
                snapshot.save()
                try:
                    with world.wrapped(net):  # G, D are their DDP wrappers inside the step
                        stats = net.train_step(batches, opts, noise)
                except NonFiniteStep as e:  # undo the whole step; its batch stays consumed
                    snapshot.restore()
                    skipped, consecutive = skipped + 1, consecutive + 1
                    log.note(f"step {step + 1} skipped: {e} ({skipped} skipped so far)")
                    if consecutive >= MAX_CONSECUTIVE_SKIPS:
                        step = saved_step = rollback(run, net, opts, step, consecutive, rollbacks, log)
                        consecutive, rollbacks = 0, rollbacks + 1
                    continue
                step, consecutive = step + 1, 0
                log.advance()
                checked = bool(tcfg.eval_every) and step % tcfg.eval_every == 0
                if step % tcfg.log_every == 0 or step == total or checked:
                    stats = world.mean(stats)  # the global batch's means, as 1 process logs them
                    if checked and world.main:
                        stats = {**stats, **health_stats(net, ref, tcfg.seed, step, log)}
                    log.log(step, {**stats, "skipped": skipped}, mcfg.batch_size)
                if tcfg.sample_every and step % tcfg.sample_every == 0 and world.main:
                    grid(net, tcfg.seed, run / "samples" / f"step-{step:06d}.png")
                if tcfg.ckpt_every and step % tcfg.ckpt_every == 0 and save():
                    saved_step, rollbacks = step, 0
            # rank 0's view of the folder decides (the others may look while it still writes)
            if step != saved_step or world.max(world.main and ckpt.latest(run, warn=False) is None):
                save()
        if world.main:
            grid(net, tcfg.seed, run / "samples.png")
        if isinstance(net, Autoencoder) and world.main:  # 50 training images above their reconstructions
            from .sample import save_grid
            x = to_float(ds.images[:50]).to(device)
            save_grid(torch.cat([x, net.reconstruct(x)]), run / "reconstructions.png", 10)
        log.close()
    except OSError as e:  # full disk, read-only folder: one line; committed checkpoints are intact
        raise UsageError(f"cannot write to {run}: {e.strerror or e}; {ckpt.intact(run)}; "
                         f"free space and continue with --resume") from None
    if not quiet:
        print(f"trained {name} to step {step} in {time.perf_counter() - t0:.0f} s "
              f"({skipped} steps skipped)", flush=True)
        if stop.set:  # SIGINT/SIGTERM: the checkpoint above holds this step
            print(f"genlab: interrupted at step {step}; continue with: genlab train --resume --out "
                  f"{run}", file=sys.stderr, flush=True)
    return run


def step_probe(net, ds, batch_size: int, device):
    """step(dtype): one training step of a throwaway copy of `net` under that autocast dtype, for
    precision.confirm (its own data order, noise and RNG: the run's are untouched)."""
    made = {}

    def step(dtype):
        if not made:  # the copy is made only if a measurement is needed
            made["net"] = copy.deepcopy(net)
            made.update(batches=Batches(ds, batch_size, 0, device), opts=made["net"].configure_optimizers(),
                        g=torch.Generator(device).manual_seed(0))
        made["net"].autocast_dtype = dtype
        with torch.random.fork_rng(devices=[]):
            try:
                made["net"].train_step(made["batches"], made["opts"], made["g"])
            except NonFiniteStep:
                pass
    return step


def health_stats(net, ref, seed: int, step: int, log) -> dict:
    """`--eval-every`: FD and class coverage of 1,000 samples (own generator: training is unchanged)."""
    h = health(net, ref, n=1000, seed=seed)
    if h["class_coverage"] < 0.9:
        log.note(f"warning: step {step}: class coverage {h['class_coverage']:.2f} of the samples' "
                 f"classes: the generator may be collapsing onto a few modes")
    return {"fd": h["fd"], "coverage": h["class_coverage"], "confident": h["confident_fraction"]}


def rollback(run: Path, net, opts, step: int, consecutive: int, rollbacks: int, log) -> int:
    """Reload the last good checkpoint's weights and optimiser state (the data order and noise keep
    moving forward, so the replayed steps see new batches); -> its step. Raises Diverged when there is
    none or it was already tried MAX_ROLLBACKS times."""
    good = ckpt.latest(run, warn=False)
    if good is None or rollbacks >= MAX_ROLLBACKS:
        where = f"the last good checkpoint {good} is intact" if good else \
            "no checkpoint to roll back to (commit them more often with --ckpt-every)"
        raise Diverged(f"training diverged: {consecutive} consecutive non-finite steps at step "
                       f"{step + 1} after {rollbacks} rollbacks; {where}")
    _, state = ckpt.restore(good, net, opts)
    log.note(f"{consecutive} consecutive non-finite steps: rolled back to {good.name} "
             f"(rollback {rollbacks + 1} of at most {MAX_ROLLBACKS})")
    return state["step"]


def write_skipped_list(run: Path, bad: list[str], quiet: bool) -> None:
    path = run / "skipped_images.txt"
    if not bad:
        path.unlink(missing_ok=True)
        return
    atomic_write_text(path, "".join(f"{b}\n" for b in bad))
    if not quiet:
        print(f"genlab: skipped {len(bad)} unreadable images (listed in {path})", file=sys.stderr)


def grid(net, seed: int, path: Path) -> None:
    """100 samples from the run's own seed; `draw` uses its own generator, so writing grids never
    changes training. (Imported here: torchvision takes seconds to import, a resumed run may never draw.)"""
    from .sample import draw, save_grid
    x, labels = draw(net, 100, seed)
    save_grid(x, path, 10, labels)   # conditional models: row k = class k


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as v
    try:
        return v("genlab")
    except PackageNotFoundError:
        return "0+local"
