"""Latent walks and latent maps of trained MNIST runs, measured (README, "Latent walks and latent maps").

One JSON line per measurement, each with the CPU, threads and the run's precision:
  * "walk": `rows` random walks of `steps` frames (apps.interpolate.walk_random), slerp and lerp from
    the same endpoints; `confident` = share of frames the shipped MNIST classifier reads with max
    p(y|x) > 0.9, `confident_mid` = the same for the middle frames (0.25 <= t <= 0.75), where the two
    paths differ most (lerp's midpoint has norm ~ |z| / sqrt(2); White 2016); conditional runs also
    give `asked` (share read as the row's class);
  * "class_walk" (conditional runs): z fixed, the soft label from A to B (walk_classes) over the 90
    ordered pairs of MNIST classes; the share of frames read as A, as B, as another class, the share
    of walks that reach B and the mean t of their first frame read as B;
  * "between" (autoencoder runs): walks between `rows` random pairs of test images of different
    classes (walk_between), slerp and lerp;
  * "map": apps.embed.embed of `--n` test images (PCA), the 5-NN class accuracy of the 2-D coordinates
    and of the full features (5-fold CV; apps.embed.knn_accuracy), the explained variance, seconds;
    first the same for the raw pixels of those images (run "pixels"), the baseline a map must beat.

    python benchmarks/bench_walk.py --runs /work/runs/dcgan,/work/runs/cgan,/work/runs/vae \\
        --data-dir ../shared/data/mnist [--rows 64] [--steps 16] [--n 5000] [--threads 1] [--seed 0]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import genlab
from _timing import timed
from genlab import precision as prec
from genlab.apps import embed as em
from genlab.apps import interpolate as ip
from genlab.data import load_data, to_float, to_uint8
from genlab.metrics.classifier import load_classifier
from genlab.models import Autoencoder, SoftLabels


def read(net, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """frames (..., C, H, W) -> (max prob, top class) (...,), read from the uint8 images as saved."""
    x = to_float(to_uint8(frames.flatten(0, -4)))
    with torch.no_grad():
        p = torch.softmax(net(x), 1)
    conf, top = p.max(1)
    return conf.reshape(frames.shape[:-3]), top.reshape(frames.shape[:-3])


def walks(model, steps: int, rows: int, path: str, seed: int) -> torch.Tensor:
    """`rows` random walks (more than ip.MAX_ROWS in chunks, one generator) -> (steps, rows, C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([ip.walk_random(model, steps, min(ip.MAX_ROWS, rows - r), path, g).frames
                      for r in range(0, rows, ip.MAX_ROWS)], 1)


def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--runs", required=True, help="comma-separated run folders (MNIST runs)")
    a.add_argument("--data-dir", required=True, help="the MNIST folder (test split for maps and pairs)")
    a.add_argument("--rows", type=int, default=64)
    a.add_argument("--steps", type=int, default=16)
    a.add_argument("--n", type=int, default=5000)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--seed", type=int, default=0)
    args = a.parse_args()
    torch.set_num_threads(args.threads)
    net = load_classifier("mnist")
    test = load_data("mnist", args.data_dir, "test")
    t = torch.linspace(0, 1, args.steps)
    mid = (t >= 0.25) & (t <= 0.75)
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))[:args.n]
    # the baseline a map must beat: the same k-NN on the raw pixels (and their top-2 PCs)
    px = to_float(test.images[idx]).flatten(1).numpy()
    xy, ev = em.project(px, "pca", args.seed)
    y = test.labels[idx].numpy()
    print(json.dumps({"cpu": prec.cpu_name(), "threads": args.threads, "kind": "map", "run": "pixels",
                      "n": len(idx), "dim": px.shape[1], "method": "pca", "explained": [round(float(v), 4) for v in ev],
                      "knn5_2d": round(em.knn_accuracy(xy, y), 4), "knn5_full": round(em.knn_accuracy(px, y), 4)}),
          flush=True)
    for run in args.runs.split(","):
        model = genlab.load(run)
        base = {"cpu": prec.cpu_name(), "threads": args.threads, "run": run, "model": model.name,
                "step": model.step, "precision": model.train_config.get("precision"), "autocast": str(model.autocast_dtype),
                "rows": args.rows, "steps": args.steps, "seed": args.seed}
        for path in ("slerp", "lerp"):
            frames, s = timed(lambda: walks(model, args.steps, args.rows, path, args.seed))
            conf, top = read(net, frames)                                 # (steps, rows)
            line = {**base, "kind": "walk", "path": path, "confident": round((conf > 0.9).float().mean().item(), 4),
                    "confident_mid": round((conf[mid] > 0.9).float().mean().item(), 4), "seconds": round(s, 2)}
            if model.num_classes:
                asked = torch.arange(args.rows) % ip.MAX_ROWS % model.num_classes   # row r of each chunk: r % K
                line["asked"] = round((top == asked).float().mean().item(), 4)
            print(json.dumps(line), flush=True)
        if model.num_classes and isinstance(model, SoftLabels):
            k, stats = model.num_classes, []
            for A in range(k):
                for B in range(k):
                    if A != B:
                        w = ip.walk_classes(model, A, B, args.steps, max(1, args.rows // 8),
                                            torch.Generator().manual_seed(args.seed + A * k + B))
                        conf, top = read(net, w.frames)                   # (steps, rows)
                        # t of the first frame whose top class is B: where the walk turns (NaN: never)
                        hit = top == B
                        turn = torch.where(hit.any(0), t[hit.float().argmax(0)], torch.nan)
                        stats.append(((top == A).float().mean().item(), hit.float().mean().item(),
                                      ((top != A) & (top != B)).float().mean().item(),
                                      turn.nanmean().item(), hit.any(0).float().mean().item(),
                                      (conf > 0.9).float().mean().item()))
            m = np.nanmean(np.array(stats, dtype=np.float64), 0)
            print(json.dumps({**base, "kind": "class_walk", "pairs": len(stats), "rows": max(1, args.rows // 8),
                              "read_as_A": round(m[0], 4), "read_as_B": round(m[1], 4), "other": round(m[2], 4),
                              "mean_turn_t": round(m[3], 4), "turned": round(m[4], 4),
                              "confident": round(m[5], 4)}), flush=True)
        if isinstance(model, Autoencoder):
            g = torch.Generator().manual_seed(args.seed)
            i = torch.randperm(len(test), generator=g)[:4 * args.rows]
            j = torch.randperm(len(test), generator=g)[:4 * args.rows]
            keep = (test.labels[i] != test.labels[j]).nonzero().flatten()[:min(args.rows, ip.MAX_ROWS)]
            x0, x1 = to_float(test.images[i[keep]]), to_float(test.images[j[keep]])
            for path in ("slerp", "lerp"):
                w = ip.walk_between(model, x0, x1, args.steps, path)
                conf, _ = read(net, w.frames)
                print(json.dumps({**base, "kind": "between", "path": path, "rows": len(keep),
                                  "confident": round((conf > 0.9).float().mean().item(), 4),
                                  "confident_mid": round((conf[mid] > 0.9).float().mean().item(), 4)}), flush=True)
        m, s = timed(lambda: em.embed(model, test.images[idx], test.labels[idx], "pca", args.seed))
        print(json.dumps({**base, "kind": "map", "n": len(idx), "source": m.source, "dim": m.features.shape[1],
                          "method": m.method, "explained": None if m.explained is None else
                          [round(float(v), 4) for v in m.explained],
                          "knn5_2d": round(em.knn_accuracy(m.coords, m.labels), 4),
                          "knn5_full": round(em.knn_accuracy(m.features, m.labels), 4),
                          "seconds": round(s, 2)}), flush=True)


if __name__ == "__main__":
    main()
