"""Data-parallel training: torchrun starts N processes, DistributedDataParallel averages gradients
(Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB).

    torchrun --standalone --nproc-per-node 2 -m genlab train dcgan ...   (= genlab train --nproc 2 ...)

The contract: N processes train the run a 1-process run trains. `--batch-size` is the global batch;
each rank takes its shard (rows rank*B/N .. (rank+1)*B/N) of every global batch, drawn in the same
seeded order (train.Batches), and its rows of the same global noise (`randn`/`rand` below: every
rank draws the whole batch's noise from one generator state and keeps its rows). The losses are
batch means, so DDP's gradient average of the N shard means is the 1-process gradient (up to float
summation order). What cannot match: operations that couple the rows of a batch see B/N rows per
rank: BatchNorm statistics (SyncBatchNorm is CUDA-only), the minibatch-std feature (cgan) and the
mode-seeking ratio of means (cgan). Rank 0 alone writes, with its own BN running statistics, in the
format of a 1-process run, so a run resumes with any number of processes.

The traps, each handled here or in the loop:
  * D runs twice (real, fake) before one backward, G twice with mode seeking: DDP's default
    re-broadcasts rank 0's buffers (BN running statistics) before every forward, an in-place write
    between forwards whose graphs are still alive (reported to break backward; not reproduced with
    torch 2.14 on CPU with Linear + BatchNorm1d, two forwards, one backward) and a broadcast
    per forward -> `forward_sync_buffers=False` (the old `broadcast_buffers=False`): each rank
    keeps its own BN running statistics, and rank 0 saves its own.
  * wrapping the whole model fails: train_step calls G and D, not model.forward, and D's parameters
    get no gradient from G's update -> each trainable child (G, D; encoder, decoder) gets its own
    DDP; parameters held by the model itself (VAE's log sigma) are averaged by a gradient hook.
  * the gradient penalty's autograd.grad(create_graph=True) fires no DDP hook (it does not
    accumulate into .grad); the plain backward after it does, once per parameter.
  * a non-finite step must be skipped on every rank or on none: guard.update sums the finiteness
    check over ranks (`finite_everywhere`); the EMA of G then moves alike on every rank.
  * SIGTERM/SIGINT to one rank, or a --max-seconds budget that one rank reaches first: the loop
    stops when any rank wants to (`World.max`, every step), so all stop after the same step.
"""
from __future__ import annotations

import faulthandler
import gc
import os
import re
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from .registry import UsageError


class Shard(torch.Generator):
    """The run's noise generator on `rank` of `world` processes. Every rank holds the same state and
    draws the global batch's noise; `randn`/`rand` keep this rank's rows. A plain generator (1
    process, sampling) keeps all rows."""

    def __new__(cls, device="cpu", rank: int = 0, world: int = 1):
        self = super().__new__(cls, device)
        self.rank, self.world = rank, world
        return self

    def __init__(self, *args, **kwargs):  # torch.Generator.__init__ takes only the device
        pass


def _rows(draw, n: int, dims, generator, device) -> torch.Tensor:
    rank, world = (generator.rank, generator.world) if isinstance(generator, Shard) else (0, 1)
    x = draw(n * world, *dims, generator=generator, device=device)  # the global batch's noise
    return x[rank * n:(rank + 1) * n]                               # this rank's n rows


def randn(n: int, *dims: int, generator=None, device=None) -> torch.Tensor:
    """(n, *dims) N(0, I) noise for n rows of a batch; with a Shard generator, this rank's rows of
    the (n * world, *dims) draw a 1-process run makes, so z equals the 1-process run's z."""
    return _rows(torch.randn, n, dims, generator, device)


def rand(n: int, *dims: int, generator=None, device=None) -> torch.Tensor:
    """(n, *dims) U[0, 1) noise, sharded like `randn`."""
    return _rows(torch.rand, n, dims, generator, device)


def finite_everywhere(found: torch.Tensor) -> bool:
    """Did no rank find a non-finite value? `found` (1,) is > 0 where this rank found one (guard's
    check). One all-reduce of its sum, so every rank skips the same steps."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        found = found.detach().float().clone()
        dist.all_reduce(found)
    return found.item() == 0


class NullLog:
    """The logger of ranks other than 0: they write nothing."""

    def note(self, msg: str) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def log(self, step: int, stats: dict, batch_size: int) -> None: ...
    def close(self) -> None: ...


class World:
    """This process's place among the run's processes (1 process: rank 0 of 1, no collectives)."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, local_size: int = 1,
                 owns_group: bool = False):
        self.rank, self.size, self.local_rank, self.local_size = rank, size, local_rank, local_size
        self.owns_group, self._wrapped = owns_group, {}

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> torch.device:
        """The device this rank computes on: cuda:LOCAL_RANK (one GPU per process), else `device`."""
        d = torch.device(device)
        if d.type == "cuda" and self.size > 1:
            d = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(d)
        return d

    def threads(self, requested: int | None) -> int:
        """--threads, else this machine's cores shared by the processes on it."""
        return requested or max(1, (os.cpu_count() or 1) // self.local_size)

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise UsageError(f"--batch-size {batch_size} is the global batch and must split evenly "
                             f"over the {self.size} processes: use a multiple of {self.size}")

    def max(self, value: int) -> int:
        """The largest `value` of all ranks, on every rank (one all-reduce)."""
        if self.size == 1:
            return int(value)
        t = torch.tensor([int(value)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def all(self, flag: bool) -> bool:
        """True on every rank when it is True on all."""
        return not self.max(not flag)

    def mean(self, stats: dict) -> dict:
        """Logged scalars averaged over ranks (one all-reduce): the global batch's means, as a
        1-process run logs them (exactly, for means over equal shards of a batch)."""
        if self.size == 1 or not stats:
            return stats
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64).detach().cpu() for v in stats.values()])
        dist.all_reduce(t)
        return dict(zip(stats, (t / self.size).unbind()))

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def wrap(self, net: torch.nn.Module) -> None:
        """DDP for each trainable child of `net` (G and D separately: their updates are separate
        backwards), and a gradient all-reduce hook on parameters `net` holds itself. Call on every
        rank at the same point (DDP broadcasts rank 0's weights)."""
        if self.size == 1:
            return
        for name, child in net.named_children():
            if any(p.requires_grad for p in child.parameters()):
                self._wrapped[name] = (child, DDP(child, forward_sync_buffers=False,
                                                  find_unused_parameters=False))
        for p in net.parameters(recurse=False):
            if p.requires_grad:
                dist.broadcast(p.data, 0)
                p.register_post_accumulate_grad_hook(self._average)

    def _average(self, p: torch.Tensor) -> None:
        dist.all_reduce(p.grad)
        p.grad.div_(self.size)

    @contextmanager
    def wrapped(self, net: torch.nn.Module):
        """Inside the block net.G (etc.) is its DDP wrapper, so the model's own train_step runs
        data-parallel; outside it, net is the plain model (checkpoints keep a 1-process run's keys)."""
        for name, (_, ddp) in self._wrapped.items():
            setattr(net, name, ddp)
        try:
            yield net
        finally:
            for name, (child, _) in self._wrapped.items():
                setattr(net, name, child)

    def close(self, ok: bool = True) -> None:
        """Leave the process group. The DDP wrappers go first (their reducers hold the group and its
        pending work; freed at interpreter exit instead, gloo's threads can abort the process:
        "terminate called without an active exception", pytorch/pytorch#190489, #179291). After a
        clean finish the ranks leave together (a barrier): rank 0 may still be writing its last
        checkpoint and grid while the others would tear down their connections. After an error no
        barrier: the failed rank's exit makes torchrun stop the others (torchtitan#1342)."""
        self._wrapped.clear()
        if self.owns_group and dist.is_initialized():
            gc.collect()  # DDP modules sit in reference cycles (hooks): free them now
            if ok:
                dist.barrier()
            dist.destroy_process_group()


def world() -> World:
    """The World of this process: torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE), joining its process group (gloo for CPU tensors, NCCL for CUDA ones: torch's
    default backends); 1 process without it."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    faulthandler.enable()  # a rank that aborts in C++ (gloo, NCCL) prints its Python stack first
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group()
    return World(rank, size, local, int(os.environ.get("LOCAL_WORLD_SIZE", str(size))), owns)


def launch(argv: list[str], nproc: int, threads: int | None = None) -> tuple[int, str | None]:
    """`genlab train ARGV` in `nproc` processes on this machine under torchrun (--standalone: a free
    port, no rendezvous server) -> (exit code, the processes' last `genlab: ...` line or None).
    Their output passes through as it comes; what follows a `genlab: error:` or `genlab: interrupted`
    line (the same line from the other ranks, torchrun's failure report) is held back, so a usage
    error still reads as one line."""
    import signal
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "genlab", "train", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or max(1, (os.cpu_count() or 1) // nproc))}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
    # Ctrl-C reaches every process of the terminal's group: the ranks stop after the same step and
    # rank 0 saves (the loop); SIGTERM to this launcher is passed on to torchrun, which passes it on
    old = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(
        signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    last, held = None, []
    try:
        for line in proc.stderr:
            if last is None and line.startswith(("genlab: error:", "genlab: interrupted")):
                last = line.strip()
            elif last is None:
                sys.stderr.write(line)
            else:
                held.append(line)
        code = proc.wait()
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
    # torchrun exits 1 when a process fails; its report names the process's own exit code
    failed = re.search(r"exitcode\s*:\s*(\d+)", "".join(held))
    return (int(failed.group(1)) if code and failed else code), last
