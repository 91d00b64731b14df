"""Device and precision, decided in one place for training, loading, sampling and evaluation.

`--precision auto` (the default) picks bf16 autocast only where the hardware runs it natively and
it is measurably faster, else fp32:
  * CUDA: bf16 when `torch.cuda.is_bf16_supported()`;
  * CPU: oneDNN must report native bf16 (AVX512-BF16 or AMX-BF16: `_is_mkldnn_bf16_supported`, which
    honours ONEDNN_MAX_CPU_ISA), then a timing probe (a 256x512x512 matmul, a few ms, once per
    process) must show bf16 at least BF16_MIN_SPEEDUP x faster than fp32; then, when training
    (`confirm`), the model's own training step must too: a few steps of a throwaway copy in each
    precision, under a second. Small MLP and LSTM steps spend their time outside large matmuls:
    on an idle Zen 4 (AVX512-BF16, 2 threads, 3 probes each) bf16 ran the MLP GAN's step at
    0.88-0.91x fp32, the RNN-GAN's at 0.90-0.97x, the VAE's at 0.98-1.09x, the cGAN's at 1.24-1.29x
    and the DCGAN's at 1.45-1.56x, so the CPU alone cannot decide.
Why it matters, measured on this project's machines (2 cores): Sapphire Rapids (AMX-BF16) runs a bf16
matmul ~6x faster than fp32 and the DCGAN step 1.9x faster; Zen 4 (AVX512-BF16, no AMX) 3.6x and
1.4x; Zen 3 / AVX2 (no native bf16) emulates bf16 ~100x *slower* than fp32 (1024^2 matmul: 0.94 vs
149 GFLOP/s) and oneDNN there has no bf16 LSTM at all.

An explicit `bf16` or `fp32` is obeyed (a warning when bf16 is emulated); LSTMs fall back to fp32
where oneDNN cannot build a bf16 LSTM (`lstm`). A run records what was asked, what was chosen and
why; `genlab.load` resolves the recorded request the same way, so sampling and evaluation use the
training-time choice on the same machine (a run whose step was measured keeps that result on any
CPU with native bf16; one without falls back to fp32).
"""
from __future__ import annotations

import functools
import json
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass

import torch

from .io import atomic_write_json, cache_root
from .registry import UsageError

BF16_MIN_SPEEDUP = 1.2  # below this, bf16's rounding is not worth it
PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Choice:
    """What a run computes with: device, precision ('bf16' | 'fp32') and why."""
    device: str
    precision: str
    reason: str
    step_speedup: float | None = None  # fp32 / bf16 time of the model's training step, when measured

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for fp32."""
        return torch.bfloat16 if self.precision == "bf16" else None

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """'cpu' | 'cuda' | 'auto' (CUDA when available) -> a device that exists, else a UsageError."""
    if isinstance(name, torch.device):
        name = name.type
    if name not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is usable here (torch.cuda.is_available() is "
                         "False); use --device cpu or auto")
    return torch.device(name)


def _fp32_over_bf16(run, trials: int) -> float:
    """fp32 time / bf16 time of `run(dtype)` (dtype None = fp32): the fastest of `trials` interleaved
    timings of each, so that another process on the machine does not decide the outcome; round 0 is
    a warm-up (oneDNN builds its kernels once)."""
    best = {None: float("inf"), torch.bfloat16: float("inf")}
    for i in range(trials + 1):
        for dt in best:
            t = time.perf_counter()
            run(dt)
            if i:
                best[dt] = min(best[dt], time.perf_counter() - t)
    return best[None] / best[torch.bfloat16]


def _bf16_speedup(m: int = 256, trials: int = 5) -> float:
    """fp32 time / bf16 time of an (m, 2m) x (2m, 2m) matmul."""
    mats = {dt: (torch.randn(m, 2 * m, dtype=dt or torch.float32),
                 torch.randn(2 * m, 2 * m, dtype=dt or torch.float32)) for dt in (None, torch.bfloat16)}
    return _fp32_over_bf16(lambda dt: mats[dt][0] @ mats[dt][1], trials)


@functools.cache
def cpu_bf16() -> tuple[bool, str]:
    """(use bf16 on this CPU?, why), cached per process."""
    isa = torch.backends.cpu.get_cpu_capability()
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False, f"fp32: this CPU ({isa}) has no native bf16 (no AVX512-BF16/AMX), bf16 would be emulated"
    speedup = _bf16_speedup()
    if speedup < BF16_MIN_SPEEDUP:
        return False, f"fp32: native bf16 ({isa}) measured only {speedup:.1f}x fp32 on a matmul"
    return True, f"bf16: native on this CPU ({isa}), matmul {speedup:.1f}x fp32"


@functools.cache
def bf16_lstm() -> bool:
    """Can oneDNN run nn.LSTM in bf16 here? (No on AVX2-only CPUs: 'could not create a primitive'.)"""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.LSTM(4, 4, batch_first=True)(torch.zeros(1, 2, 4))
        return True
    except RuntimeError:
        return False


def resolve(precision: str = "auto", device: str = "cpu", recorded: dict | None = None) -> Choice:
    """The one decision: requested precision and device -> Choice (device exists; bf16 only where
    asked for or native). `recorded`: the run's saved Choice (to_dict), whose measured training-step
    result `auto` keeps where bf16 is native (resume, load)."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = resolve_device(device)
    if dev.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        why = "bf16: supported by this GPU" if native else "fp32: this GPU has no bf16"
    else:
        native, why = cpu_bf16()
    if precision == "auto":
        chosen = "bf16" if native else "fp32"
        if native and dev.type == "cpu" and (recorded or {}).get("step_speedup") is not None:
            return Choice(str(dev), recorded["precision"], recorded["reason"], recorded["step_speedup"])
    else:
        chosen, why = precision, f"{precision}: asked for"
        if precision == "bf16" and not native:
            warnings.warn("--precision bf16 is emulated on this machine (no native bf16): expect it "
                          "far slower than fp32; --precision auto picks the fast one")
    if chosen == "bf16" and dev.type == "cpu" and not bf16_lstm():
        why += "; LSTM layers in fp32 (oneDNN has no bf16 LSTM on this CPU)"
    return Choice(str(dev), chosen, why)


def confirm(choice: Choice, request: str, step, key: str = "", trials: int = 5) -> Choice:
    """`auto` chose bf16 on a CPU: keep it only if the model's own training step, `step(dtype)` (one
    step of a throwaway copy; dtype None = fp32), runs BF16_MIN_SPEEDUP x faster in bf16 (the fastest
    of `trials` interleaved timings each, after a warm-up round in which oneDNN builds its kernels).
    The result is cached per machine, torch, threads and `key` (the model and its configuration) in
    $GENLAB_CACHE/precision.json, as cuDNN's benchmark mode caches its choices: the same command on
    the same machine computes in the same precision (delete the file to measure again). Explicit
    requests, GPUs, fp32 choices and already measured (recorded) choices pass unchanged."""
    if request != "auto" or choice.precision != "bf16" or choice.device != "cpu" \
            or choice.step_speedup is not None:
        return choice
    isa = torch.backends.cpu.get_cpu_capability()
    key = f"{cpu_name()} | {isa} | torch {torch.__version__} | {torch.get_num_threads()} threads | {key}"
    path = cache_root() / "precision.json"
    try:
        cached = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        cached = None
    if isinstance(cached, (int, float)):
        speedup, how = float(cached), "measured earlier on this machine"
    else:
        speedup, how = round(_fp32_over_bf16(step, trials), 2), "measured"
        _remember(path, key, speedup)
    if speedup < BF16_MIN_SPEEDUP:
        return Choice(choice.device, "fp32", f"fp32: native bf16 ({isa}), but this model's training "
                      f"step ran only {speedup:.2f}x fp32 in bf16 ({how})", speedup)
    return Choice(choice.device, "bf16", f"{choice.reason}; this model's training step {speedup:.2f}x "
                  f"({how})", speedup)


def _remember(path, key: str, speedup: float) -> None:
    """Add key -> speedup to the cache file (atomic; a cache that cannot be written is skipped)."""
    try:
        try:
            table = json.loads(path.read_text())
            table = table if isinstance(table, dict) else {}
        except (OSError, ValueError):
            table = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {**table, key: speedup}, durable=False, indent=1)
    except OSError:
        pass


def lstm(rnn: torch.nn.LSTM, x: torch.Tensor):
    """rnn(x), in fp32 when bf16 autocast is on but this CPU has no bf16 LSTM (else oneDNN raises)."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and not bf16_lstm():
        with torch.autocast("cpu", enabled=False):
            return rnn(x.float())
    return rnn(x)


class Precision:
    """Mixed precision for a model's forward passes: `autocast_dtype` comes from a Choice (None =
    fp32); models run their networks under `self.autocast(device_type)`, losses in fp32."""
    autocast_dtype: torch.dtype | None = None

    def autocast(self, device_type: str):
        return torch.autocast(device_type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)


def _cpuinfo(key: str) -> str | None:
    """The first `key : value` of /proc/cpuinfo (Linux), else None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform's guess)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    return set((_cpuinfo("flags") or "").split())


def describe() -> dict:
    """CPU, ISA torch uses and what `auto` picks: written into every benchmark line and `genlab info`."""
    flags = cpu_flags()
    choice = resolve("auto", "cpu")
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "isa": torch.backends.cpu.get_cpu_capability(),
            "cpu_flags": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "auto_precision": choice.precision, "auto_reason": choice.reason}
