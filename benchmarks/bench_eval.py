"""Seconds for `genlab eval` and its parts on this machine, as JSON lines.

    PYTHONPATH=src python benchmarks/bench_eval.py --run runs/dc [--data-dir ../shared/data/mnist]
        [--n 10000] [--threads 2]

Rows: FD of 10k vs 10k domain features (extraction of both sets + the distance), building the cached
reference statistics, and the whole `evaluate()` of a run (10k samples, default metrics, reference
from the cache), split into sampling and scoring; and `health()` (1,000 samples). Without --run only
the metric rows are printed. Each row records the thread count and the 1-minute load average, since
on a shared machine the numbers move with the neighbours.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from _timing import timed  # benchmarks/_timing.py (a script's own folder is on sys.path)


def main():
    default_dir = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    p = argparse.ArgumentParser()
    p.add_argument("--run", help="a trained run folder (e.g. dcgan on mnist-5k)")
    p.add_argument("--data-dir", default=str(default_dir))
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    os.environ.setdefault("GENLAB_CACHE", tempfile.mkdtemp(prefix="genlab-bench-cache-"))

    from genlab.data import load_data
    from genlab.evaluate import evaluate
    from genlab.metrics.health import health
    from genlab.reference import reference_stats
    from genlab.metrics import extract, frechet_distance
    from genlab.metrics.threads import blas_threads

    def emit(row):
        row.update(threads=torch.get_num_threads(), load_1min=round(os.getloadavg()[0], 2),
                   torch=torch.__version__)
        row["seconds"] = round(row["seconds"], 3)
        print(json.dumps(row), flush=True)

    fake_u8 = load_data("mnist", data_dir=a.data_dir, split="train").images[:a.n]
    real_u8 = load_data("mnist", data_dir=a.data_dir, split="test").images[:a.n]
    extract("mnist-cnn", real_u8[:10])  # load + verify the weights once, outside the timings
    with blas_threads(a.threads):
        (fake, real), s_ext = timed(lambda: (extract("mnist-cnn", fake_u8), extract("mnist-cnn", real_u8)))
        fd, s_fd = timed(lambda: frechet_distance(fake["features"], real["features"]))
    emit({"bench": f"fd {len(fake_u8)} vs {len(real_u8)} incl. extraction of both", "seconds": s_ext + s_fd,
          "extract_s": round(s_ext, 3), "fd_s": round(s_fd, 3), "value": fd})

    ref, s = timed(lambda: reference_stats("mnist-5k", "test", a.data_dir))
    emit({"bench": "reference_stats mnist test (build + write cache)", "seconds": s, "cached": ref["cached"]})
    ref, s = timed(lambda: reference_stats("mnist-5k", "test", a.data_dir))
    emit({"bench": "reference_stats mnist test (from cache)", "seconds": s, "cached": ref["cached"]})
    if not a.run:
        return

    from genlab.run import load
    from genlab.sample import draw
    model = load(a.run)
    _, s_draw = timed(lambda: draw(model, a.n, 0))
    emit({"bench": f"sample {a.n} from {a.run}", "seconds": s_draw})
    rep, s = timed(lambda: evaluate(a.run, n=a.n, data_dir=a.data_dir))
    emit({"bench": f"evaluate {a.run} n={a.n} (default metrics, cached reference)", "seconds": s,
          "scoring_s_excl_sampling": round(s - s_draw, 3),
          "values": {k: e["values"] for k, e in rep["scores"].items()}})
    for name in ("fd", "kid", "pr"):
        with blas_threads(a.threads):
            from genlab.metrics import compute
            f = extract("mnist-cnn", fake_u8)
            _, s = timed(lambda: compute([name], f, ref))
        emit({"bench": f"metric {name} ({a.n} vs cached reference)", "seconds": s})
    h, s = timed(lambda: health(model, ref, n=1000, seed=0))
    emit({"bench": "health n=1000", "seconds": s, "value": {k: h[k] for k in ("fd", "class_coverage")}})


if __name__ == "__main__":
    main()
