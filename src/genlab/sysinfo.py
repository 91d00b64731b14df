"""`genlab info`: what a bug report or a benchmark needs to know about this machine (like
`diffusers-cli env` or `python -m torch.utils.collect_env`): versions, CPU model and ISA, threads,
CUDA devices, measured fp32/bf16 GEMM throughput and the precision `auto` picks. No training; about
a second (the bf16 GEMM is timed on a small matrix so an emulated bf16 stays quick)."""
from __future__ import annotations

import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version

import torch

from . import precision


def gemm_gflops(dtype: torch.dtype, n: int, seconds: float = 0.2) -> float:
    """Throughput of an n x n x n matmul in dtype, repeated for about `seconds` after one warm-up."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while reps == 0 or time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def collect() -> dict:
    """Everything `genlab info` prints, as a dict (also written into benchmark lines)."""
    d = {"genlab": _version("genlab"), "python": platform.python_version(), "torch": torch.__version__,
         "torchvision": _version("torchvision"), "numpy": _version("numpy"),
         "platform": platform.platform(), **precision.describe(),
         "bf16_lstm": precision.bf16_lstm(),
         "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
         if torch.cuda.is_available() else []}
    d["gemm_fp32_gflops"] = round(gemm_gflops(torch.float32, 1024), 1)
    # 256^3 in bf16: ~0.03 GFLOP, i.e. ~20 ms even where bf16 is emulated at ~1 GFLOP/s
    d["gemm_bf16_gflops"] = round(gemm_gflops(torch.bfloat16, 256 if d["auto_precision"] == "fp32" else 1024), 1)
    return d


def format_info(d: dict) -> str:
    rows = [("genlab", d["genlab"]), ("python", d["python"]), ("torch", d["torch"]),
            ("torchvision", d["torchvision"]), ("numpy", d["numpy"]), ("platform", d["platform"]),
            ("cpu", f"{d['cpu']} ({d['cores']} cores)"),
            ("isa", f"{d['isa']} (torch kernels); flags: {', '.join(d['cpu_flags']) or 'none of avx2/avx512/amx'}"
             + (f"; ONEDNN_MAX_CPU_ISA={d['onednn_max_isa']}" if d["onednn_max_isa"] else "")),
            ("threads", d["threads"]),
            ("cuda", ", ".join(d["cuda"]) or "none"),
            ("gemm fp32", f"{d['gemm_fp32_gflops']} GFLOP/s"),
            ("gemm bf16", f"{d['gemm_bf16_gflops']} GFLOP/s"),
            ("bf16 lstm", "yes" if d["bf16_lstm"] else "no (LSTMs run in fp32 under bf16)"),
            ("precision auto", d["auto_reason"] + ("; training then keeps bf16 only if the model's "
                                                   "own step is faster" if d["auto_precision"] == "bf16" else ""))]
    return "\n".join(f"{k:15s} {v}" for k, v in rows)


if __name__ == "__main__":
    print(format_info(collect()), file=sys.stdout)
