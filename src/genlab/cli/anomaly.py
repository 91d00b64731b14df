"""`genlab anomaly RUN --input FILE.npz --out scores.npz`: an anomaly score per image (apps/anomaly.py);
the npz holds `scores` (N,) float64 (higher = more anomalous), `method` and the input's `labels`."""
from __future__ import annotations

from pathlib import Path

from ..registry import UsageError
from .base import Parser, command


@command("anomaly", "score how anomalous images are under a trained run (vae, gan, dcgan, cgan)")
def anomaly(argv: list[str]) -> None:
    from ..apps.anomaly import METHODS
    s = Parser(prog="genlab anomaly", description="Higher score = less like the training data.")
    s.add_argument("run", help="run folder (or a ckpt-XXXXXXXX folder)")
    s.add_argument("--input", required=True, help="FILE.npz with `images` uint8 (N, C, H, W) or "
                   "(N, H, W) and optional `labels` (N,)")
    s.add_argument("--out", required=True, help="FILE.npz to write: scores, method, labels")
    s.add_argument("--method", choices=list(METHODS), help="default: gmm for a vae (measured best; "
                   "README 'Anomaly detection'), anogan for a GAN")
    s.add_argument("--background", metavar="RUN", help="--method ratio: the background run, the same "
                   "model trained on the same data with --perturb 0.15 (Ren et al. 2019)")
    s.add_argument("--reference", metavar="FILE.npz", help="--method knn / gmm: the normal images "
                   "(uint8 `images`) to compare against; default: the run's own training data")
    s.add_argument("--seed", type=int, default=0, help="seed of the scores' randomness (z draws)")
    s.add_argument("--batch-size", type=int, default=500)
    args = s.parse_args(argv)
    out, src = Path(args.out), Path(args.input)
    if out.suffix != ".npz":
        raise UsageError(f"--out must end in .npz, got {args.out!r}")
    for flag, f in (("--input", src), ("--reference", args.reference and Path(args.reference))):
        if f and not f.is_file():
            raise UsageError(f"{flag} {f} not found; pass a FILE.npz of uint8 images")
    for flag, v, lo in (("--seed", args.seed, 0), ("--batch-size", args.batch_size, 1)):
        if v < lo:
            raise UsageError(f"{flag} must be >= {lo}, got {v}")
    if not out.parent.is_dir():  # before the (possibly long) scoring
        raise UsageError(f"cannot write {out}: folder {out.parent} does not exist; choose another --out")
    import numpy as np
    import torch

    from ..apps.anomaly import anomaly_scores
    from ..data import read_npz, to_float
    from ..io import atomic_save_npz
    from ..run import load
    images, labels = read_npz(src)
    x = to_float(torch.from_numpy(images))  # (N, C, H, W)
    model = load(args.run)
    background = load(args.background) if args.background else None
    reference = torch.from_numpy(read_npz(args.reference)[0]) if args.reference else None
    scores, method = anomaly_scores(model, x, args.method, torch.Generator().manual_seed(args.seed),
                                    labels=None if labels is None else torch.from_numpy(labels.astype(np.int64)),
                                    batch_size=args.batch_size, background=background,
                                    reference=reference)
    arrays = {"scores": scores, "method": np.array(method)}
    if labels is not None:
        arrays["labels"] = labels
    try:
        atomic_save_npz(out, **arrays)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}; choose another --out") from None
    print(out)
