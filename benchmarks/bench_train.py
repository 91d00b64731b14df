"""Training throughput: genlab's loop against a plain PyTorch loop of the same networks, in one process.

Prints one JSON line per (model, precision): img/s of `genlab.train` (the real loop: guarded updates,
step snapshot, EMA, logging) and of a plain loop (BCE-with-logits, Adam, no extras) on the same data,
batch size and thread count, and their ratio. The ratio is the figure; absolute img/s vary with load.

    python benchmarks/bench_train.py [--steps 300] [--threads 2] [--models gan,dcgan]
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time

import torch
import torch.nn.functional as F

import genlab
from genlab.data import load_data, to_float
from genlab.models import MODELS


def plain_loop(G, D, images, batch_size, z_dim, steps, bf16) -> float:
    """The pytorch/examples dcgan/main.py loop, condensed; returns img/s after 20 warm-up steps."""
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ac = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    gen = torch.Generator().manual_seed(0)
    t0 = None
    for i in range(steps + 20):
        if i == 20:
            t0 = time.perf_counter()
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x = to_float(images[idx])
        z = torch.randn(batch_size, z_dim, generator=gen)
        with ac():
            fake = G(z)
            real_l, fake_l = D(x).float(), D(fake.detach()).float()
        d_loss = F.binary_cross_entropy_with_logits(real_l, torch.ones_like(real_l)) + \
            F.binary_cross_entropy_with_logits(fake_l, torch.zeros_like(fake_l))
        opt_d.zero_grad(set_to_none=True); d_loss.backward(); opt_d.step()
        with ac():
            out = D(fake).float()
        g_loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        opt_g.zero_grad(set_to_none=True); g_loss.backward(); opt_g.step()
    return steps * batch_size / (time.perf_counter() - t0)


def genlab_loop(name, steps, precision, threads) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as d:
        run = genlab.train(name, data="mnist-5k", out=d, max_steps=steps + 20, precision=precision,
                           threads=threads, sample_every=0, ckpt_every=0, log_every=20, quiet=True)
        rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:]  # the first window holds warm-up
    return sum(r["img_s"] for r in timed) / len(timed), genlab.load  # noqa


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="gan,dcgan")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = load_data("mnist-5k").images
    for name in args.models.split(","):
        cfg = MODELS[name]()
        for precision in ("fp32", "bf16"):
            ours, _ = genlab_loop(name, args.steps, precision, args.threads)
            torch.manual_seed(0)
            net = cfg.build((1, 28, 28))
            G, D = copy.deepcopy(net.G), copy.deepcopy(net.D)
            plain = plain_loop(G, D, images, cfg.batch_size, cfg.z_dim, args.steps, precision == "bf16")
            print(json.dumps({"bench": "train", "model": name, "precision": precision,
                              "batch_size": cfg.batch_size, "threads": args.threads,
                              "genlab_img_s": round(ours, 1), "plain_img_s": round(plain, 1),
                              "ratio": round(ours / plain, 3), "ema": cfg.ema}), flush=True)


if __name__ == "__main__":
    main()
