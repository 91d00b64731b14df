"""Seconds for genlab's evaluation path at the usual size, 10k generated vs 10k real, as JSON lines.

    PYTHONPATH=src python benchmarks/bench_metrics.py [--data-dir ../shared/data/mnist] [--n 10000]

"Generated" images are 10k MNIST training digits and "real" the 10k test digits (the cost does not
depend on what the images show). Without the MNIST files the shipped mnist-5k set stands in (n <= 5k,
both sides drawn from it).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from genlab.data import load_data
from genlab.metrics import compute, extract, frechet_distance, kernel_distance, memorisation, precision_recall

from _timing import timed  # benchmarks/_timing.py (a script's own folder is on sys.path)


def main():
    default_dir = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=str(default_dir))
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if Path(a.data_dir).is_dir():
        fake_u8 = load_data("mnist", data_dir=a.data_dir, split="train").images[:a.n]
        real_u8 = load_data("mnist", data_dir=a.data_dir, split="test").images[:a.n]
        train_u8 = load_data("mnist", data_dir=a.data_dir, split="train").images[-a.n:]
    else:
        x = load_data("mnist-5k").images
        fake_u8, real_u8, train_u8 = x[: len(x) // 2], x[len(x) // 2:], x
    n = min(len(fake_u8), len(real_u8))
    fake_u8, real_u8 = fake_u8[:n], real_u8[:n]
    base = {"n_fake": n, "n_real": n, "threads": torch.get_num_threads(), "torch": torch.__version__}

    extract("mnist-cnn", real_u8[:10])  # load + verify the weights once, outside the timings
    (fake, real), s_extract = timed(lambda: (extract("mnist-cnn", fake_u8), extract("mnist-cnn", real_u8)))
    fd, s_fd = timed(lambda: frechet_distance(fake["features"], real["features"]))
    rows = [
        {"bench": "extract mnist-cnn (both sets)", "seconds": s_extract,
         "images_per_s": 2 * n / s_extract},
        {"bench": "fd", "seconds": s_fd, "value": fd},
        {"bench": "extract + fd", "seconds": s_extract + s_fd},
    ]
    kid, s = timed(lambda: kernel_distance(fake["features"], real["features"]))
    rows.append({"bench": "kid (100 subsets of 1000)", "seconds": s, "value": kid["kid_mean"]})
    pr, s = timed(lambda: precision_recall(real["features"], fake["features"]))
    rows.append({"bench": "precision/recall k=3", "seconds": s, "value": [pr["precision"], pr["recall"]]})
    train = extract("mnist-cnn", train_u8)
    memo, s = timed(lambda: memorisation(fake["features"], real["features"], train["features"]))
    rows.append({"bench": f"memorisation vs {len(train_u8)} train", "seconds": s,
                 "value": memo["nn_median_ratio"]})
    _, s = timed(lambda: compute(["cs", "classes"], fake))
    rows.append({"bench": "classifier score + classes", "seconds": s})
    for r in rows:
        r["seconds"] = round(r["seconds"], 3)
        print(json.dumps({**r, **base}), flush=True)


if __name__ == "__main__":
    main()
