"""The one guarded parameter update every model uses, and the step snapshot that undoes a bad step.

A non-finite loss or gradient must not reach the weights: `update` raises `NonFiniteStep` before
`opt.step()`. A GAN step makes several updates (D, then G), so when G's gradient turns bad after D
already stepped, the loop restores the `StepSnapshot` taken before the step: nothing the step touched
advances (weights, BN statistics, EMA, optimiser moments), and the batch it drew stays consumed.
The loop counts and logs each skip; after `K` consecutive ones it rolls back to the last good
checkpoint, and a divergence that survives that raises `Diverged` (CLI: one line, exit 1).
"""
from __future__ import annotations

import signal

import torch

from .distributed import finite_everywhere


class NonFiniteStep(RuntimeError):
    pass


class Diverged(RuntimeError):
    """Training produced non-finite steps it could not recover from."""


def update(opt: torch.optim.Optimizer, loss: torch.Tensor, name: str = "") -> None:
    """zero_grad -> backward -> (check finite) -> step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    if not finite_everywhere(nonfinite(loss, grads)):  # data-parallel: all ranks skip the step, or none
        opt.zero_grad(set_to_none=True)
        raise NonFiniteStep(f"non-finite {name or 'loss'} or gradient")
    opt.step()


def nonfinite(loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """(1,) > 0 when the loss or any gradient holds inf or nan. One fused kernel over all of them:
    GradScaler's check (`_amp_foreach_non_finite_check_and_unscale_`) at scale 1, which leaves the
    values unchanged; half the time of summing `torch._foreach_norm` (15 vs 32-39 us for the MLP
    GAN's D or G, 2 threads, AVX-512), and no overflow of a large finite norm to inf."""
    found = torch.zeros(1, device=loss.device)
    one = torch.ones(1, device=loss.device)
    # grouped by dtype as GradScaler groups them (its CUDA kernel takes one dtype per call)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in [loss.detach().float().reshape(1), *grads]:
        by_dtype.setdefault(t.dtype, []).append(t)
    for ts in by_dtype.values():
        torch._amp_foreach_non_finite_check_and_unscale_(ts, found, one)
    return found


class StepSnapshot:
    """Preallocated copies of what a failed step must put back; `save()` before a step, `restore()`
    after a failed one. Copies use fused foreach kernels.

    What is copied follows the Trainable contract (models/__init__.py): the optimisers step in the
    order of configure_optimizers(), the last one last. A failing update raises before its
    opt.step(), so the last optimiser's parameters and moments, and the EMA that follows it, are
    never touched by a failed step and need no copy. Copied: every buffer (BN statistics move in the
    forward passes, the EMA counter), and the parameters and moments of the earlier optimisers (D
    for a GAN; nothing for the one-optimiser VAE). Copying the whole state instead (G, D, G_ema and
    both optimisers' moments) cost ~7 model sizes of memory traffic a step, measured as most of the
    gap between the MLP GAN's loop and a plain one (benchmarks/bench_train.py)."""

    def __init__(self, model: torch.nn.Module, opts: dict[str, torch.optim.Optimizer]):
        self.model, self.opts = model, opts
        *self._earlier, self._last = opts.values()
        last = {id(p) for g in self._last.param_groups for p in g["params"]}
        earlier = [p for o in self._earlier for g in o.param_groups for p in g["params"]]
        assert not any(id(p) in last for p in earlier), "an optimiser's parameters belong to one optimiser"
        # listed once: the model's tensors are updated in place (steps, load_state_dict); walking
        # state_dict() every step cost 4% of an MLP-GAN step. Optimiser state is re-listed (it
        # appears at the first step and a checkpoint restore replaces it).
        self._model_tensors = [b for b in model.buffers()] + earlier
        self._live: list[torch.Tensor] = []
        self._copy: list[torch.Tensor] = []
        self._empty: list[bool] = []

    def _tensors(self):
        live = list(self._model_tensors)
        for o in self._earlier:
            for st in o.state.values():
                live.extend(v for v in st.values() if torch.is_tensor(v))
        return live

    @torch.no_grad()
    def save(self) -> None:
        live = self._tensors()
        if len(live) != len(self._live) or any(a is not b for a, b in zip(live, self._live)):
            self._live, self._copy = live, [t.detach().clone() for t in live]
        elif live:
            torch._foreach_copy_(self._copy, self._live)
        self._empty = [len(o.state) == 0 for o in self._earlier]

    @torch.no_grad()
    def restore(self) -> None:
        if self._live:
            torch._foreach_copy_(self._live, self._copy)
        for o, empty in zip(self._earlier, self._empty):
            if empty:  # the optimiser took its first step inside the failed one: forget it
                o.state.clear()


class StopFlag:
    """SIGINT/SIGTERM set a flag: the loop finishes the current step, commits a checkpoint and exits 0."""

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
