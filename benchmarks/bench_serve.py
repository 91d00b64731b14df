"""Latency of drawing images, the model part of a request to the page (`genlab serve`): a 100-image grid
and a single image, PyTorch eager vs torch.compile vs onnxruntime (the graph `genlab export` writes).

One JSON line per (model, path, threads) with the CPU, ISA, threads, precision, the machine's load
average when measured (the figure is wall-clock: re-run on an idle machine), and for the grid (n=100)
and the single image (n=1) the median and the fastest of `--reps` timed calls after warm-up, in ms, and
the median process CPU time per call (`*_cpu_ms`: at 1 thread, about the idle wall time);
`grid_meets_target`: the 100-image grid in <= TARGET_MS (the page's budget on 2 cores).

The networks are the default recipes (latency does not depend on the weights), or a trained run
(`--run DIR`, one model). Eager is `model.generate(z, y)` as `genlab sample` runs it (at the precision
the run resolves, `auto` for the default recipes: bf16 where native, else fp32; then `eager-fp32`, the
fp32 copy onnxruntime's graph is made from); torch.compile compiles the same call (inductor, dynamic=False:
one graph per batch size, both warmed up; compile time reported); onnxruntime runs the fp32 graph
with intra-op threads = --threads. z is drawn outside the timed call in all three.

    python benchmarks/bench_serve.py [--models dcgan] [--threads 1,2] [--reps 30] [--run RUN]
    python benchmarks/bench_serve.py --models gan,dcgan,cgan,rnngan,vae --paths eager,eager-fp32,onnxruntime
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

import genlab
from genlab import precision as prec
from genlab.config import build
from genlab.export import export_onnx, fp32_copy
from genlab.models import MODELS

from _timing import timed

TARGET_MS = 50.0
SIZES = {"grid": 100, "single": 1}
WARMUP = 3


def default_model(name: str):
    torch.manual_seed(0)
    model = build(MODELS[name], {}).build((1, 28, 28), 10)  # conditional models take the 10 classes
    model.autocast_dtype = prec.resolve("auto").dtype        # as a run trained here with the default
    return model.eval()


def inputs(model, n: int):
    g = torch.Generator().manual_seed(n)
    z = torch.randn(n, model.z_dim, generator=g)
    y = torch.arange(n) % model.num_classes if model.num_classes else None
    return z, y


def time_ms(fn, reps: int) -> tuple[float, float, float]:
    """(median wall ms, fastest wall ms, median process-CPU ms) of fn() over `reps` calls after WARMUP
    untimed ones. On a loaded machine at 1 thread the CPU time is close to the idle wall time (the
    wait for a core is not counted); at 2 threads it sums both threads' work."""
    for _ in range(WARMUP):
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        c = time.process_time()
        wall.append(timed(fn)[1] * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def paths(model, onnx_path, threads: int, wanted: list[str]):
    """name -> (setup seconds, n -> callable drawing n images)."""
    out = {}
    if "eager" in wanted:
        def eager(n):
            a = inputs(model, n)
            return lambda: model.generate(*a)
        out["eager"] = (0.0, eager)
    if "eager-fp32" in wanted and model.autocast_dtype is not None:  # same precision as onnxruntime's
        net = fp32_copy(model)

        def eager_fp32(n):
            a = inputs(net, n)
            return lambda: net.generate(*a)
        out["eager-fp32"] = (0.0, eager_fp32)
    if "compile" in wanted:
        torch._dynamo.reset()
        f = torch.compile(model.generate, dynamic=False)
        t = time.perf_counter()
        for n in SIZES.values():   # compile both batch sizes now, outside the timing
            f(*inputs(model, n))

        def compiled(n):
            a = inputs(model, n)
            return lambda: f(*a)
        out["compile"] = (time.perf_counter() - t, compiled)
    if "onnxruntime" in wanted:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        t = time.perf_counter()
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

        def onnx(n):
            z, y = inputs(model, n)
            feed = {"z": z.numpy(), **({"y": y.numpy()} if y is not None else {})}
            return lambda: sess.run(None, feed)
        out["onnxruntime"] = (time.perf_counter() - t, onnx)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="dcgan")
    ap.add_argument("--run", help="a trained run folder instead of the default recipe (one model)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--paths", default="eager,eager-fp32,compile,onnxruntime")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    machine = prec.describe()
    wanted = args.paths.split(",")
    names = [None] if args.run else args.models.split(",")
    for name in names:
        torch.set_num_threads(1)
        model = genlab.load(args.run) if args.run else default_model(name)
        name = getattr(model, "name", name)
        with tempfile.TemporaryDirectory() as d:
            export_onnx(model, d)  # verified against PyTorch (1e-4) before any timing
            for threads in map(int, args.threads.split(",")):
                torch.set_num_threads(threads)
                for path, (setup_s, make) in paths(model, os.path.join(d, "generate.onnx"), threads,
                                                   wanted).items():
                    line = {"bench": "serve", "model": name, "path": path, "threads": threads,
                            "precision": "bf16" if path in ("eager", "compile") and model.autocast_dtype
                            else "fp32", "reps": args.reps, "setup_s": round(setup_s, 2)}
                    for what, n in SIZES.items():
                        med, best, cpu = time_ms(make(n), args.reps)
                        line.update({f"{what}_ms": round(med, 3), f"{what}_ms_min": round(best, 3),
                                     f"{what}_cpu_ms": round(cpu, 3)})
                    line["grid_meets_target"] = line["grid_ms"] <= TARGET_MS
                    line.update(target_ms=TARGET_MS, load_avg_1min=round(os.getloadavg()[0], 2),
                                cpu=machine["cpu"], isa=machine["isa"], cores=machine["cores"],
                                run=str(args.run) if args.run else None)
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
