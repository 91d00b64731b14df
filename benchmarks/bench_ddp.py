"""Data-parallel training throughput: 1 process against N processes (torchrun, gloo) on this machine.

One JSON line per (model, processes, threads per process): global img/s of `genlab train` (read from
metrics.jsonl, the first logging window left out as warm-up), the speedup over 1 process at 1
thread, the per-process efficiency (speedup / processes), and what DDP all-reduces per step: the
gradients of G and of D (fp32), `grad_mb_per_step`, of which a ring all-reduce sends
2 (N - 1) / N per process (`ring_mb_sent_per_process`). The same global batch in every line, so
the runs compute the same steps (distributed.py). A line with 1 process at N threads shows the
other way to use the same cores.

    python benchmarks/bench_ddp.py [--models dcgan] [--steps 200] [--nproc 2] [--data mnist-5k]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from genlab import precision as prec
from genlab.config import build
from genlab.data import load_data
from genlab.models import MODELS

WINDOW = 20  # steps per logged img/s window; the first window is warm-up


def run(model: str, nproc: int, threads: int, steps: int, batch: int, data: str, data_dir) -> float:
    """Global img/s of `genlab train MODEL` in `nproc` processes of `threads` threads each."""
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "genlab.cli", "train", model, "--data", data, "--out", d,
               "--overwrite", "--max-steps", str(steps + WINDOW), "--batch-size", str(batch),
               "--threads", str(threads), "--precision", "fp32", "--sample-every", "0",
               "--ckpt-every", "0", "--log-every", str(WINDOW), "--nproc", str(nproc)]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = [json.loads(l) for l in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    timed = [r["img_s"] for r in rows[1:] if "img_s" in r]
    return sum(timed) / len(timed)


def grad_bytes(model: str, data: str, data_dir) -> tuple[int, int]:
    """(parameters DDP all-reduces per step, their fp32 bytes): G's and D's (each its own DDP)."""
    ds = load_data(data, data_dir, "train")
    net = build(MODELS[model], {}).build(ds.shape, ds.num_classes)
    n = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return n, 4 * n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="dcgan")
    ap.add_argument("--steps", type=int, default=200, help="timed steps (after a 20-step warm-up)")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=0, help="global batch (default: the model's)")
    ap.add_argument("--data", default="mnist-5k")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--load", default="", help="a note on the machine's load, copied to every line")
    args = ap.parse_args()
    machine = prec.describe()
    for model in args.models.split(","):
        batch = args.batch_size or MODELS[model]().batch_size
        n, nbytes = grad_bytes(model, args.data, args.data_dir)
        base = None
        for nproc, threads in ((1, 1), (args.nproc, 1), (1, args.nproc)):
            ips = run(model, nproc, threads, args.steps, batch, args.data, args.data_dir)
            base = base or ips
            print(json.dumps({
                "bench": "ddp", "model": model, "processes": nproc, "threads_per_process": threads,
                "global_batch": batch, "steps": args.steps, "precision": "fp32", "backend": "gloo",
                "img_s": round(ips, 1), "speedup_vs_1x1": round(ips / base, 3),
                "per_process_efficiency": round(ips / base / nproc, 3),
                "params_allreduced": n, "grad_mb_per_step": round(nbytes / 2**20, 3),
                "ring_mb_sent_per_process": round(2 * (nproc - 1) / nproc * nbytes / 2**20, 3),
                "cpu": machine["cpu"], "isa": machine["isa"], "cores": os.cpu_count(),
                "torch": torch.__version__, "load": args.load or os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
