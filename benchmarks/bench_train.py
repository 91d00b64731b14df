"""Training throughput of every model: genlab's loop against a plain PyTorch loop of the same networks.

One JSON line per (model, precision), each naming the CPU, the ISA torch runs and the precision: img/s
of `genlab.train` (the real loop: guarded updates, step snapshot, EMA, logging) and of a plain loop
in the style of pytorch/examples dcgan/main.py (zero_grad -> backward -> step, the model's own loss,
no extras) on the same data, networks, batch size and threads, their ratio, and the share of the
machine's measured GEMM peak that the plain step reaches (FLOPs counted by torch's FlopCounterMode).
The two loops alternate `--rounds` times in one process; each round gives one ratio (the two loops
run back to back, so a slow minute of a shared machine hits both; every other round runs the plain
loop first, so a drifting machine speed favours neither), and the figure is the median of those
ratios, with their range; the img/s columns are the best of each loop (they vary with load).
`step_ratio` isolates the step: genlab's (step snapshot + the model's train_step) against the plain
one, alternating in blocks of a fraction of a second, median over the blocks; it stays readable
where the whole-loop rounds swing with the machine (session 8, MLP GAN, Zen 4: rounds 0.63-1.35).
Precisions: fp32, and bf16 where it is native (`--precision all` forces bf16 too, e.g. to show how
slow emulated bf16 is).

    python benchmarks/bench_train.py [--steps 200] [--threads 2] [--models gan,dcgan,cgan,rnngan,vae]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import genlab
from genlab import precision as prec
from genlab.config import build
from genlab.data import load_data, to_float
from genlab.models import MODELS, Autoencoder, place
from genlab.sysinfo import gemm_gflops

WARMUP = 20


def plain_step(net, images, labels, gen, ac):
    """One training step of `net`'s networks written out plainly; returns nothing."""
    c, opt = net.config, net.plain_opts
    idx = torch.randint(len(images), (c.batch_size,), generator=gen)
    x, y = to_float(images[idx]), labels[idx]
    if isinstance(net, Autoencoder):  # VAE: -ELBO = recon + KL, one reparameterised z
        recon, kl = net.terms(x, gen)
        loss = (recon + c.beta * kl).mean()
        opt["vae"].zero_grad(set_to_none=True); loss.backward(); opt["vae"].step()
        return
    G, D, loss = net.G, net.D, net.loss
    for _ in range(c.n_critic):
        z = torch.randn(c.batch_size, c.z_dim, generator=gen)
        with ac():
            fake = G(z, y)
            d_loss = loss.d(D(x, y).float(), D(fake.detach(), y).float())
        opt["d"].zero_grad(set_to_none=True); d_loss.backward(); opt["d"].step()
    with ac():
        g_loss = loss.g(D(fake, y).float())
        if c.ms:  # cgan's mode-seeking term needs a second batch of G
            z2 = torch.randn(c.batch_size, c.z_dim, generator=gen)
            g_loss = g_loss + c.ms / ((fake.float() - G(z2, y).float()).abs().mean() / (z - z2).abs().mean() + 1e-5)
    opt["g"].zero_grad(set_to_none=True); g_loss.backward(); opt["g"].step()


def fresh(name, precision):
    """-> (config, fresh networks seeded alike, with their own optimisers as `plain_opts`, and the
    autocast the plain step runs under)."""
    torch.manual_seed(0)
    cfg = build(MODELS[name], {})
    net = cfg.build((1, 28, 28), 10 if name in ("cgan", "rnngan") else 0)
    net.plain_opts = net.configure_optimizers()
    return cfg, net, lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def plain_loop(name, steps, precision, images, labels) -> tuple[float, float]:
    """-> (img/s, FLOPs per step) of the plain loop, fresh networks."""
    cfg, net, ac = fresh(name, precision)
    gen = torch.Generator().manual_seed(0)
    with FlopCounterMode(display=False) as fc:
        plain_step(net, images, labels, gen, ac)
    for _ in range(WARMUP):
        plain_step(net, images, labels, gen, ac)
    t0 = time.perf_counter()
    for _ in range(steps):
        plain_step(net, images, labels, gen, ac)
    return steps * cfg.batch_size / (time.perf_counter() - t0), fc.get_total_flops()


def interleaved_step_ratio(name, precision, ds, blocks, n) -> float:
    """genlab's step (the step snapshot, then the model's train_step: guarded updates, EMA) against
    plain_step, alternating blocks of `n` steps in one process; -> the median over blocks of plain
    time / genlab time. Blocks of a fraction of a second each, so a drifting machine speed hits both
    steps alike; the whole-loop ratio swings with it (+-0.3 a round on this VM; session 8)."""
    from genlab.guard import StepSnapshot
    from genlab.train import Batches
    cfg, ours, _ = fresh(name, precision)
    _, plain, ac = fresh(name, precision)
    ours = place(ours, "cpu")  # as genlab.train places it (channels_last)
    ours.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    opts = ours.configure_optimizers()
    ours.train(), plain.train()
    batches, snap = Batches(ds, cfg.batch_size, 0, "cpu"), StepSnapshot(ours, opts)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)

    def genlab_step():
        snap.save()
        ours.train_step(batches, opts, g1)

    def plain_one():
        plain_step(plain, ds.images, ds.labels, g2, ac)

    for f in (genlab_step, plain_one):
        for _ in range(5):
            f()
    ratios = []
    for _ in range(blocks):
        t = []
        for f in (genlab_step, plain_one):
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            t.append(time.perf_counter() - t0)
        ratios.append(t[1] / t[0])
    return statistics.median(ratios)


def genlab_loop(name, steps, precision, threads) -> float:
    """img/s of genlab.train, from metrics.jsonl (windows of 20 steps; the first holds warm-up)."""
    with tempfile.TemporaryDirectory() as d:
        run = genlab.train(name, data="mnist-5k", out=d, max_steps=steps + WARMUP, precision=precision,
                           threads=threads, sample_every=0, ckpt_every=0, log_every=WARMUP, quiet=True)
        rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    timed = [r["img_s"] for r in rows[1:] if "img_s" in r]
    return sum(timed) / len(timed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7,
                    help="alternations of the two loops (one ratio each; the median is reported)")
    ap.add_argument("--models", default="gan,dcgan,cgan,rnngan,vae")
    ap.add_argument("--precision", default="native", choices=("native", "all", "fp32", "bf16"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    machine = prec.describe()
    native = machine["auto_precision"] == "bf16"
    precisions = {"native": ["fp32"] + (["bf16"] if native else []), "all": ["fp32", "bf16"],
                  "fp32": ["fp32"], "bf16": ["bf16"]}[args.precision]
    peak = {p: gemm_gflops(torch.float32 if p == "fp32" else torch.bfloat16, 1024 if native or p == "fp32" else 256)
            for p in precisions}
    ds = load_data("mnist-5k")
    for name in args.models.split(","):
        # about the same seconds per measurement for every model: the MLP GAN's step is ~4 ms (its
        # 200 steps took under a second and swung the ratio by +-0.3 on a shared host), rnngan's ~50 ms
        steps = max(20, int(args.steps * {"gan": 5, "rnngan": 0.1}.get(name, 1)))
        for p in precisions:
            ours, plain, ratios = [], [], []
            for r in range(args.rounds):
                # counterbalanced (ABBA...): odd rounds run the plain loop first, so a machine that
                # speeds up or slows down during the benchmark favours neither loop in the median
                first_ours = r % 2 == 0
                if first_ours:
                    ours.append(genlab_loop(name, steps, p, args.threads))
                ips, flops = plain_loop(name, steps, p, ds.images, ds.labels)
                plain.append(ips)
                if not first_ours:
                    ours.append(genlab_loop(name, steps, p, args.threads))
                ratios.append(ours[-1] / plain[-1])
            ours, plain = max(ours), max(plain)
            # the steps alone, finely interleaved: (blocks, steps a block) of ~0.1-0.4 s each
            blocks = {"gan": (40, 25), "rnngan": (20, 5)}.get(name, (40, 5))
            step_ratio = interleaved_step_ratio(name, p, ds, *blocks)
            bs = MODELS[name]().batch_size
            print(json.dumps({"bench": "train", "model": name, "precision": p, "batch_size": bs,
                              "threads": args.threads, "steps": steps,
                              "genlab_img_s": round(ours, 1), "plain_img_s": round(plain, 1),
                              "ratio": round(statistics.median(ratios), 3),
                              "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
                              "step_ratio": round(step_ratio, 3),
                              "gflop_per_step": round(flops / 1e9, 3),
                              "plain_share_of_gemm_peak": round(flops * plain / bs / 1e9 / peak[p], 3),
                              "gemm_peak_gflops": round(peak[p], 1),
                              "cpu": machine["cpu"], "isa": machine["isa"],
                              "auto_precision": machine["auto_precision"]}), flush=True)


if __name__ == "__main__":
    main()
