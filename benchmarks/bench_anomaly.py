"""Anomaly detection on MNIST: per-digit AUROC of genlab's anomaly scores (apps/anomaly.py).

Two protocols, never mixed:
  a  one digit is normal: the model is trained on that digit's MNIST train images (--classes d) and
     scores the whole MNIST test split; the other nine digits are the anomalies (the one-class setting
     of Deep SVDD, Ruff et al. 2018: mean AUROC 0.948; OCGAN, Perera et al. 2019: 0.975; AnoGAN 0.937
     as reported there);
  b  one digit is the anomaly: trained on the other nine digits' train images, scored on the whole
     test split, the held-out digit positive (GANomaly, Akcay et al. 2018; digit 1 is the hard case).
Positives = anomalies, so AUROC (scikit-learn's roc_auc_score) is P(score(anomaly) > score(normal)).
One JSON line per (protocol, digit, model): training steps and seconds, scoring seconds and AUROC of
every method the model supports; then one summary line per (protocol, model) with the mean AUROC.
Each model trains with the run's seed on 1 thread by default, `--max-steps` fixed (results do not
depend on the machine's load; seconds do). `--method ratio` (Ren et al. 2019) also trains, per digit,
a background model: the same recipe on the same digits with `perturb=--background-perturb`.
`--runs-dir DIR` keeps the trained runs (DIR/<protocol>/<digit>[-bg]) and reuses those already there
with the same recipe, so that new scores are measured on the same models (their training seconds
are the ones recorded when they were trained).

    PYTHONPATH=src python benchmarks/bench_anomaly.py --protocol a [--digits 0-9] [--model vae]
        [--steps 3000] [--threads 1] [--data-dir ../shared/data/mnist] [--set z_dim=8 ...]
        [--methods recon,complexity,ratio] [--background-perturb 0.15] [--runs-dir /tmp/anom-runs]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import genlab
from genlab import precision as prec
from genlab.apps.anomaly import anomaly_scores, methods_for
from genlab.data import Dataset, load_data, to_float
from genlab.io import atomic_save_npz

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
METHOD_OPTIONS = {"elbo": dict(samples=4), "iwae": dict(k=100), "recon": {}, "knn": dict(k=5),
                  "gmm": dict(components=20),
                  "ssim": {}, "complexity": dict(samples=4), "recon-complexity": {}, "ratio": dict(samples=4),
                  "anogan": dict(steps=50, restarts=1), "disc": {}}


def trained(args, out: Path, classes: list[int], opts: dict) -> tuple[Path, float]:
    """(run folder, training seconds): reused from `out` when it holds a run of this exact recipe
    (bench_train.json, written last), trained there otherwise."""
    recipe = {"model": args.model, "classes": classes, "steps": args.steps, "seed": args.seed,
              **({"split": "val"} if args.split == "val" else {}),
              "precision": args.precision, "threads": args.threads, "options": opts}
    done = out / "bench_train.json"
    if done.is_file() and json.loads(done.read_text())["recipe"] == recipe:
        return out, json.loads(done.read_text())["train_seconds"]
    t0 = time.perf_counter()
    run = genlab.train(args.model, data=args.train_data, data_dir=args.train_dir, classes=classes,
                       max_steps=args.steps, threads=args.threads, precision=args.precision,
                       seed=args.seed, out=str(out), sample_every=0, ckpt_every=0, overwrite=True,
                       log_every=args.steps, quiet=True, **opts)
    seconds = round(time.perf_counter() - t0, 1)
    if genlab.load(run).step != args.steps:   # stopped early (SIGTERM ends training with a checkpoint)
        raise SystemExit(f"{run} stopped before step {args.steps}: not recorded as trained")
    done.write_text(json.dumps({"recipe": recipe, "train_seconds": seconds}))
    return run, seconds


def scored_split(args, root: Path) -> Dataset:
    """The images scored: MNIST's test split, or (--split val) train images 50,000-59,999, the models
    then trained on an npz of train images 0-49,999 written to `root` (args.train_data/train_dir)."""
    args.train_data, args.train_dir = "mnist", args.data_dir
    if args.split == "test":
        return load_data("mnist", args.data_dir, "test")
    full = load_data("mnist", args.data_dir, "train")
    args.train_data, args.train_dir = "npz", str(root / "train-0-49999.npz")
    if not Path(args.train_dir).is_file():
        root.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(args.train_dir, images=full.images[:50000].numpy(), labels=full.labels[:50000].numpy())
    return Dataset(full.images[50000:], full.labels[50000:], "mnist-val")


def digits(text: str) -> list[int]:
    if "-" in text:
        lo, hi = map(int, text.split("-"))
        return list(range(lo, hi + 1))
    return [int(d) for d in text.split(",")]


def value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--protocol", choices=("a", "b"), required=True)
    p.add_argument("--digits", type=digits, default=list(range(10)))
    p.add_argument("--model", default="vae")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", help="comma-separated (default: all the model supports)")
    p.add_argument("--n-test", type=int, help="score only the first N test images (slow methods)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="val: train on MNIST train images 0-49,999 and score 50,000-59,999 (choosing a "
                        "method or its k there, not on the test digits); test: train on all 60,000, "
                        "score the test split")
    p.add_argument("--option", nargs="*", default=[], metavar="METHOD.KEY=VALUE",
                   help="method options, e.g. knn.k=20 gmm.components=20")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--runs-dir", help="keep (and reuse) the trained runs here")
    p.add_argument("--background-perturb", type=float, default=0.15,
                   help="perturb rate of ratio's background model (Ren et al. 2019 used 0.1-0.2)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model options")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model_opts = {k: value(v) for k, v in (s.split("=", 1) for s in args.set)}
    for o in args.option:
        (m, key), v = o.split("=", 1)[0].split(".", 1), o.split("=", 1)[1]
        METHOD_OPTIONS[m] = {**METHOD_OPTIONS[m], key: value(v)}
    choice = prec.resolve(args.precision)
    common = {"bench": "anomaly", "split": args.split, "protocol": args.protocol, "model": args.model, "steps": args.steps,
              "threads": args.threads, "precision": choice.precision, "seed": args.seed,
              "model_options": model_opts, "method_options": METHOD_OPTIONS, "cpu": prec.cpu_name()}
    if args.methods and "ratio" in args.methods.split(","):
        common["background_perturb"] = args.background_perturb
    aurocs: dict[str, list[float]] = {}
    train_s = []
    with tempfile.TemporaryDirectory() as tmp:
        test = scored_split(args, Path(args.runs_dir or tmp))
        x, y = to_float(test.images[:args.n_test]), test.labels[:args.n_test].numpy()
        common["n_test"] = len(x)
        root = Path(args.runs_dir or tmp) / (args.protocol + ("-val" if args.split == "val" else ""))
        for d in args.digits:
            classes = [d] if args.protocol == "a" else [c for c in range(10) if c != d]
            run, t_train = trained(args, root / str(d), classes, model_opts)
            model = genlab.load(run)
            methods = args.methods.split(",") if args.methods else methods_for(model)
            background = None
            if "ratio" in methods:   # Ren et al.'s background model: same data, perturbed inputs
                bg_run, t_bg = trained(args, root / f"{d}-bg", classes,
                                       {**model_opts, "perturb": args.background_perturb})
                background, t_train = genlab.load(bg_run), t_train + t_bg
            train_s.append(t_train)
            anomalous = (y != d) if args.protocol == "a" else (y == d)
            line = {**common, "digit": d, "train_seconds": round(t_train, 1), "auroc": {},
                    "score_seconds": {}}
            for m in methods:
                g = torch.Generator().manual_seed(args.seed)
                t0 = time.perf_counter()
                s, _ = anomaly_scores(model, x, m, g, labels=torch.as_tensor(y),
                                      background=background, **METHOD_OPTIONS[m])
                line["score_seconds"][m] = round(time.perf_counter() - t0, 1)
                line["auroc"][m] = round(float(roc_auc_score(anomalous, s)), 4)
                aurocs.setdefault(m, []).append(line["auroc"][m])
            print(json.dumps(line), flush=True)
    print(json.dumps({**common, "digits": args.digits, "summary": True,
                      "mean_auroc": {m: round(float(np.mean(v)), 4) for m, v in aurocs.items()},
                      "mean_train_seconds": round(float(np.mean(train_s)), 1)}), flush=True)


if __name__ == "__main__":
    main()
