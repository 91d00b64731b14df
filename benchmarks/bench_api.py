"""Latency and throughput of `genlab serve`'s /api/sample over loopback HTTP, against a real server.

Starts `genlab serve RUN --port 0 --threads T` in a subprocess and times, from this process:
  * latency of POST /api/sample for a 100-image grid and for one image (median and p90 of --repeats
    calls, one at a time, after --warmup calls);
  * throughput under a bounded load: --requests calls (n=1) from --clients threads, each with its
    own keep-alive connection; the status counts show what the bounded queue turned away (503);
and, in this process, the parts of a 100-image call: G's forward pass and the PNG encoding.
One JSON line per figure, with the CPU, threads and precision. Run it on an idle machine:

    python benchmarks/bench_api.py [--run /work/runs/dcgan] [--threads 2] [--repeats 50]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import torch

import genlab
from genlab import precision as prec
from genlab.serve import space


def quantiles(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 2), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2),
            "min_ms": round(ms[0], 2)}


def latency(base: str, body: dict, repeats: int, warmup: int) -> dict:
    with httpx.Client(timeout=60) as c:
        for i in range(warmup):
            c.post(base + "/api/sample", json={**body, "seed": i}).raise_for_status()
        ms = []
        for i in range(repeats):
            t = time.perf_counter()
            r = c.post(base + "/api/sample", json={**body, "seed": 1000 + i})
            ms.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
    return quantiles(ms)


def throughput(base: str, requests: int, clients: int) -> dict:
    codes, ms, lock = Counter(), [], threading.Lock()

    def client(k):
        with httpx.Client(timeout=120) as c:
            for i in range(k, requests, clients):
                t = time.perf_counter()
                r = c.post(base + "/api/sample", json={"seed": i, "n": 1})
                with lock:
                    codes[r.status_code] += 1
                    ms.append((time.perf_counter() - t) * 1000)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    return {"requests": requests, "clients": clients, "seconds": round(wall, 3),
            "ok_per_s": round(codes[200] / wall, 1), "status": dict(codes), **quantiles(ms)}


def parts(run: str, threads: int, repeats: int) -> dict:
    """In-process: G's forward pass for 100 images and the PNG encoding of their grid."""
    torch.set_num_threads(threads)
    model = genlab.load(run)
    g, fwd, enc = torch.Generator().manual_seed(0), [], []
    for i in range(repeats + 5):
        z = torch.randn(100, model.z_dim, generator=g)
        t = time.perf_counter()
        x = model.generate(z)
        t1 = time.perf_counter()
        space.png_grid(x, 10)
        if i >= 5:
            fwd.append((t1 - t) * 1000)
            enc.append((time.perf_counter() - t1) * 1000)
    return {"generate_100_ms": statistics.median(fwd), "generate_100_min_ms": min(fwd),
            "png_100_ms": statistics.median(enc), "png_100_min_ms": min(enc),
            "model": model.name, "step": model.step,
            "precision": "bf16" if model.autocast_dtype == torch.bfloat16 else "fp32"}


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--run", default="/work/runs/dcgan")
    a.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    a.add_argument("--repeats", type=int, default=50)
    a.add_argument("--warmup", type=int, default=10)
    a.add_argument("--requests", type=int, default=200)
    a.add_argument("--clients", type=int, default=4)
    a.add_argument("--queue", type=int, default=32)
    args = a.parse_args()
    torch.set_num_threads(args.threads)
    common = {**prec.describe(), "threads": args.threads, "run": args.run, "options": vars(args)}
    inproc = parts(args.run, args.threads, args.repeats)
    common["precision"], common["model"], common["step"] = inproc.pop("precision"), inproc["model"], inproc["step"]
    print(json.dumps({**common, "bench": "in-process parts of a 100-image call",
                      **{k: round(v, 2) for k, v in inproc.items() if k.endswith("_ms")}}), flush=True)
    p = subprocess.Popen([sys.executable, "-m", "genlab.cli", "serve", args.run, "--port", "0",
                          "--threads", str(args.threads), "--queue", str(args.queue)],
                         stdout=subprocess.PIPE, text=True)
    try:
        base = re.search(r"open (http://\S+)", p.stdout.readline()).group(1).rstrip("/")
        for n in (100, 1):
            print(json.dumps({**common, "bench": f"/api/sample latency, n={n}",
                              **latency(base, {"n": n}, args.repeats, args.warmup)}), flush=True)
        print(json.dumps({**common, "bench": "/api/sample throughput, n=1",
                          **throughput(base, args.requests, args.clients)}), flush=True)
    finally:
        p.terminate()
        p.wait(10)


if __name__ == "__main__":
    main()
