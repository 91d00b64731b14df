"""Classification Accuracy Score (Ravuri & Vinyals 2019, arXiv:1905.10887): train a classifier on
generated images only, test it on the real test split, and compare with the same classifier trained on
as many real images. Plus the scarce-data case: a few real images per class alone, with classical
augmentation (random shifts and small rotations), with synthetic images, and with both.

One JSON line per row (the CPU, threads, precision, the row's recipe and its test accuracy). A row is
parts joined by "+": `real<N>` (N real train images per class, a seeded random subset), `cgan<N>` /
`dcgan<N>` (N generated images per class through genlab.apps.augment.augment, the function behind
`genlab augment`; dcgan samples are labelled by the shipped MNIST classifier), `dcgan<N>@P` (only
samples the classifier labels with p >= P), `aug` (random +-2 px shifts and +-10 degree rotations
during training). When real and synthetic images are mixed, the real ones are repeated to make half
of the training set (otherwise 10 real images per class would be 1% of it).

Every row trains the same network (genlab.metrics.classifier.Classifier) with the same recipe
(metrics.classifier.fit: AdamW, one-cycle, batch 128) for the same number of steps, so rows differ only
in their training images. The test split is MNIST's 10,000 test images; accuracy in fp32.

    python benchmarks/bench_cas.py --data-dir ../shared/data/mnist --cgan RUN --dcgan RUN \\
        [--steps 500] [--threads 1] [--seed 0] [--rows real1000,cgan1000,...] [--truncation PSI]

`--cgan` / `--dcgan` take a run folder (its newest checkpoint) or one checkpoint folder (RUN/ckpt-N).
`--truncation PSI` draws the generators' z from N(0, I) truncated to |z_i| <= PSI (the "truncation
trick", Brock et al. 2019, by resampling): sharper, more typical images, fewer unusual ones, a
diversity trade that Ravuri & Vinyals found to lower CAS on ImageNet; it applies to every synthetic
part and is recorded in the row.

Default rows: real1000 cgan1000 dcgan1000 dcgan1000@0.9, and for 10 and 100 real images per class:
realR, realR+aug, realR+cgan1000, realR+cgan1000+aug.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time

import torch

from genlab import precision as prec
from genlab.apps.augment import augment
from genlab.data import load_data
from genlab.metrics.classifier import evaluate, fit, load_classifier

PART = re.compile(r"^(real|cgan|dcgan)(\d+)(?:@([0-9.]+))?$|^aug$")
SHIFT, ROTATE = 2, 10.0   # the classical augmentation: pixels, degrees


def default_rows(scarce=(10, 100), per_class=1000) -> list[str]:
    rows = [f"real{per_class}", f"cgan{per_class}", f"dcgan{per_class}", f"dcgan{per_class}@0.9"]
    for r in scarce:
        rows += [f"real{r}", f"real{r}+aug", f"real{r}+cgan{per_class}", f"real{r}+cgan{per_class}+aug"]
    return rows


def real_subset(train, per_class: int, g: torch.Generator):
    """per_class images of each class, a random subset (the same for a given seed and per_class)."""
    idx = torch.cat([torch.nonzero(train.labels == c)[:, 0] for c in range(10)])
    perm = idx[torch.randperm(len(idx), generator=g)]
    keep = torch.cat([perm[train.labels[perm] == c][:per_class] for c in range(10)])
    return train.images[keep], train.labels[keep]


def truncated_noise(model, psi: float):
    """model.noise with each z_i ~ N(0, 1) redrawn until |z_i| <= psi (same generator, deterministic)."""
    def noise(n, generator=None, device=None):
        z = torch.randn(n, model.z_dim, generator=generator)
        while (bad := z.abs() > psi).any():
            z[bad] = torch.randn(int(bad.sum()), generator=generator)
        return z.to(device) if device is not None else z
    return noise


class Synth:
    """Synthetic sets, drawn once per (model, per_class, min_confidence) and kept for later rows."""

    def __init__(self, runs: dict, seed: int, truncation: float | None = None):
        self.runs, self.seed, self.sets, self.models = runs, seed, {}, {}
        self.truncation = truncation

    def get(self, name: str, per_class: int, p: float):
        key = (name, per_class, p)
        if key not in self.sets:
            import genlab
            if not self.runs.get(name):
                sys.exit(f"bench_cas: row needs --{name} RUN")
            if name not in self.models:
                self.models[name] = genlab.load(self.runs[name])
                if self.truncation:
                    self.models[name].noise = truncated_noise(self.models[name], self.truncation)
            model = self.models[name]
            clf = load_classifier("mnist") if p or not model.num_classes else None  # labels, filter
            t0 = time.perf_counter()
            r = augment(model, per_class, torch.Generator().manual_seed(self.seed), clf, p)
            info = {"run": str(self.runs[name]), "checkpoint": str(model.checkpoint), "model": model.name,
                    "step": model.step, "per_class": per_class, "truncation": self.truncation,
                    "labels_from": r.labels_from, "min_confidence": p, "drawn": r.drawn,
                    "rejected": r.rejected, "surplus": r.surplus,
                    "draw_seconds": round(time.perf_counter() - t0, 1)}
            self.sets[key] = (r.images, r.labels, info)
        return self.sets[key]


def run_row(row: str, train, test, synth: Synth, args, bf16: bool) -> dict:
    parts = row.split("+")
    bad = [p for p in parts if not PART.match(p)]
    if bad:
        sys.exit(f"bench_cas: cannot read row part(s) {bad} of {row!r} (realN, cganN, dcganN[@P], aug)")
    real, fake, infos, aug = None, [], [], "aug" in parts
    for part in parts:
        m = PART.match(part)
        if m.group(1) == "real":
            real = real_subset(train, int(m.group(2)), torch.Generator().manual_seed(args.seed))
        elif m.group(1):
            x, y, info = synth.get(m.group(1), int(m.group(2)), float(m.group(3) or 0))
            fake.append((x, y))
            infos.append(info)
    xs = [x for x, _ in fake]
    ys = [y for _, y in fake]
    if real is not None:
        reps = max(1, -(-sum(len(x) for x in xs) // len(real[0]))) if xs else 1  # real = half of a mix
        xs.append(real[0].repeat(reps, 1, 1, 1))
        ys.append(real[1].repeat(reps))
    x, y = torch.cat(xs), torch.cat(ys)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    net = fit(x, y, args.steps, g, args.batch_size, args.lr, shift=SHIFT if aug else 0,
              rotate=ROTATE if aug else 0.0, bf16=bf16)
    seconds = time.perf_counter() - t0
    acc = evaluate(net, test.images, test.labels)
    return {"bench": "cas", "row": row, "test_accuracy": round(acc, 4),
            "real_per_class": len(real[0]) // 10 if real is not None else 0,
            "synthetic": infos, "classical_aug": f"shift {SHIFT} px, rotate {ROTATE} deg" if aug else None,
            "train_images": len(x), "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
            "seed": args.seed, "train_seconds": round(seconds, 1), "test_images": len(test),
            "cpu": prec.cpu_name(), "threads": torch.get_num_threads(),
            "precision": "bf16" if bf16 else "fp32", "torch": torch.__version__}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="the MNIST folder (IDX files)")
    p.add_argument("--cgan", help="a conditional run (rows with cganN)")
    p.add_argument("--dcgan", help="an unconditional run (rows with dcganN)")
    p.add_argument("--rows", help="comma-separated rows (default: see the docstring)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, help="draw z truncated to |z_i| <= PSI (default: off)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="auto", choices=prec.PRECISIONS,
                   help="of the classifier's training passes (auto: bf16 where native); tests are fp32")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    bf16 = prec.resolve(a.precision).precision == "bf16"
    train = load_data("mnist", data_dir=a.data_dir, split="train")
    test = load_data("mnist", data_dir=a.data_dir, split="test")
    if a.truncation is not None and a.truncation <= 0:
        sys.exit(f"bench_cas: --truncation must be > 0, got {a.truncation}")
    synth = Synth({"cgan": a.cgan, "dcgan": a.dcgan}, a.seed, a.truncation)
    for row in (a.rows.split(",") if a.rows else default_rows()):
        print(json.dumps(run_row(row, train, test, synth, a, bf16)), flush=True)


if __name__ == "__main__":
    main()
