"""Restoration scores on held-out MNIST test digits: genlab's latent search (apps/restore.py) against
the classical baselines, one JSON line per (model or baseline, task).

Tasks, on the first --n test digits (never seen in training): `box` a centre 14x14 box missing (Yeh et
al. 2017's centre mask, a quarter of the image), `random` 75% of the pixels missing independently
(seeded), and `noise0.3` / `noise0.5` Gaussian noise of that std in [-1, 1] units added, clipped to
[-1, 1] and stored as uint8 as a user's file would be. Inputs and outputs go through uint8 like the
commands' npz files; nothing is blended with the ground truth before scoring (inpainting keeps the
known pixels, which are the input's own).

Scores: `psnr` (dB) over the missing pixels (inpainting) or the whole image (denoising), per image then
averaged (scikit-image peak_signal_noise_ratio, range 255); `ssim` the scikit-image SSIM map (7x7) averaged
over the same pixels, per image then averaged; `acc` the shipped MNIST classifier's accuracy on the
whole restored images (clean test digits: ~0.996); `s_per_image` wall time per image (on a loaded
machine this is an upper bound). Baselines: inpainting `zero` (missing = black, the masked input
itself), `mean` (missing = the mean of the image's known pixels), `biharmonic` (scikit-image
inpaint_biharmonic); denoising `noisy` (the input), `blur` (scikit-image gaussian, 1 px), `nlmeans`
(scikit-image denoise_nl_means, h = 0.8 sigma with the true sigma, skimage's example setting).

    PYTHONPATH=src python benchmarks/bench_restore.py --runs /work/runs/vae,/work/runs/dcgan \\
        [--n 100] [--tasks box,random,noise0.3,noise0.5] [--restarts 10] [--steps 100] [--threads 1] > r.jsonl
    python benchmarks/bench_restore.py --table r.jsonl      # the README's markdown table from those lines
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

import genlab
from genlab.apps import restore
from genlab.data import load_data, to_float, to_uint8
from genlab.metrics.classifier import evaluate, load_classifier
from genlab.precision import cpu_name

BOX = (7, 7, 14, 14)     # x, y, w, h: the centre 14x14 of a 28x28 digit
RANDOM_MISSING = 0.75


def degrade(task: str, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """-> (degraded uint8 (N, 1, 28, 28), region scored (N, 1, 28, 28) bool, noise sigma or None);
    for inpainting the degraded image holds 0 (black) in the missing pixels and region = missing."""
    g = torch.Generator().manual_seed(seed)
    if task == "box":
        mask = restore.box_mask(x.shape[1:], BOX).expand(len(x), 1, 28, 28)
    elif task == "random":
        mask = (torch.rand(len(x), 1, 28, 28, generator=g) >= RANDOM_MISSING).float()
    else:
        sigma = float(task.removeprefix("noise"))
        y = (to_float(x) + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        return to_uint8(y), torch.ones(x.shape, dtype=torch.bool), sigma
    return (x * mask).to(torch.uint8), ~mask.bool(), None


def baselines(task: str, y: torch.Tensor, region: torch.Tensor, sigma) -> dict:
    """name -> function of nothing returning the baseline's uint8 restorations (N, 1, 28, 28)."""
    from skimage.filters import gaussian
    from skimage.restoration import denoise_nl_means, inpaint_biharmonic
    a = y[:, 0].numpy().astype(np.float64) / 255
    per = lambda f: lambda: torch.from_numpy(np.stack([np.clip(f(i), 0, 1) for i in range(len(a))])[:, None] * 255
                                            ).round().to(torch.uint8)
    if sigma is None:
        miss = region[:, 0].numpy()
        mean = lambda i: np.where(miss[i], a[i][~miss[i]].mean(), a[i])
        return {"zero": lambda: y, "mean": per(mean), "biharmonic": per(lambda i: inpaint_biharmonic(a[i], miss[i]))}
    s = sigma / 2  # [-1, 1] units -> [0, 1] units
    return {"noisy": lambda: y, "blur": per(lambda i: gaussian(a[i], sigma=1)),
            "nlmeans": per(lambda i: denoise_nl_means(a[i], h=0.8 * s, sigma=s, patch_size=5,
                                                      patch_distance=6, fast_mode=True))}


def model_method(model, task, y, region, sigma, args):
    def run():
        g = torch.Generator().manual_seed(args.seed)
        opts = dict(restarts=args.restarts, steps=args.steps, lr=args.lr, batch_size=args.batch_size)
        if sigma is None:
            return to_uint8(restore.inpaint(model, to_float(y), (~region).to(torch.uint8), g, lam=args.prior, **opts))
        return to_uint8(restore.denoise(model, to_float(y), sigma, g, **opts))
    return run


def scores(x: torch.Tensor, r: torch.Tensor, region: torch.Tensor, labels, net) -> dict:
    xs, rs, reg = x[:, 0].numpy(), r[:, 0].numpy(), region[:, 0].numpy()
    return {"psnr": round(float(np.mean([restore.region_psnr(a, b, m) for a, b, m in zip(xs, rs, reg)])), 2),
            "ssim": round(float(np.mean([restore.region_ssim(a, b, m) for a, b, m in zip(xs, rs, reg)])), 3),
            "acc": round(evaluate(net, r, labels), 3)}


def table(path) -> str:
    """Markdown rows (task, method, PSNR, SSIM, accuracy, s/image) from this script's JSON lines."""
    rows = [json.loads(l) for l in open(path) if l.startswith("{")]
    out = ["| task | method | PSNR (dB) | SSIM | classifier acc. | s / image |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["task"] == "clean":
            out.append(f"| clean test digits | none | | | {r['acc']:.3f} | |")
        else:
            search = f", {r['restarts']} restarts x {r['steps']} steps" if "restarts" in r else ""
            out.append(f"| {r['task']} | {r['method']}{search} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['acc']:.3f} | "
                       f"{r['s_per_image']:.3g} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", help="print the markdown table of a file of this script's JSON lines, and exit")
    ap.add_argument("--runs", default="/work/runs/vae,/work/runs/dcgan", help="comma-separated run folders")
    ap.add_argument("--data-dir", default="/work/shared/data/mnist")
    ap.add_argument("--split", default="test", choices=("test", "train"), help="train: for tuning only")
    ap.add_argument("--n", type=int, default=100, help="digits scored (the first n of the split)")
    ap.add_argument("--tasks", default="box,random,noise0.3,noise0.5")
    ap.add_argument("--restarts", type=int, default=restore.DEFAULTS["restarts"])
    ap.add_argument("--steps", type=int, default=restore.DEFAULTS["steps"])
    ap.add_argument("--lr", type=float, default=restore.DEFAULTS["lr"])
    ap.add_argument("--prior", type=float, default=0.1, help="inpainting's lam (genlab inpaint --prior)")
    ap.add_argument("--batch-size", type=int, default=restore.DEFAULTS["batch_size"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args()
    if args.table:
        return print(table(args.table))
    torch.set_num_threads(args.threads)
    ds = load_data("mnist", args.data_dir, split=args.split)
    x, labels = ds.images[:args.n], ds.labels[:args.n]
    net = load_classifier("mnist")
    models = [genlab.load(r) for r in args.runs.split(",") if r]
    common = {"bench": "restore", "cpu": cpu_name(), "threads": args.threads, "split": args.split, "n": args.n}
    print(json.dumps({**common, "task": "clean", "method": "none", "acc": round(evaluate(net, x, labels), 3)}),
          flush=True)
    for task in args.tasks.split(","):
        y, region, sigma = degrade(task, x, args.seed + 1)
        methods = {} if args.no_baselines else {k: (f, {}) for k, f in baselines(task, y, region, sigma).items()}
        for m in models:
            methods[f"{m.name} ({m.run_dir.name}, step {m.step})"] = (
                model_method(m, task, y, region, sigma, args),
                {"precision": "bf16" if m.autocast_dtype is not None else "fp32", "restarts": args.restarts,
                 "steps": args.steps, "lr": args.lr, **({"prior": args.prior} if sigma is None else {"sigma": sigma})})
        for name, (fn, opts) in methods.items():
            t = time.perf_counter()
            r = fn()
            dt = time.perf_counter() - t
            print(json.dumps({**common, "task": task, "method": name, **scores(x, r, region, labels, net),
                              "s_per_image": round(dt / args.n, 4), **opts}), flush=True)
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
