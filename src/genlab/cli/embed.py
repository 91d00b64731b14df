"""`genlab embed RUN --data D --out map.png`: the latent map of real images (genlab.apps.embed): a 2-D
scatter coloured by class (+ the decoded manifold for a 2-D VAE), the coordinates in an npz beside it
(map.npz: `coords` float32 (n, 2), `labels` (n,), `index` (n,) the images' positions in the split,
`explained` for PCA), and one JSON line with the k-NN class accuracy of the map."""
from __future__ import annotations

import json
from pathlib import Path

from ..registry import UsageError
from .base import Parser, command


@command("embed", "latent map of real images: VAE means or GAN discriminator features in 2-D (PNG + npz)")
def embed(argv: list[str]) -> None:
    s = Parser(prog="genlab embed")
    s.add_argument("run", help="run folder (or a ckpt-XXXXXXXX folder)")
    s.add_argument("--data", required=True, help="data source (genlab list data), e.g. mnist")
    s.add_argument("--data-dir", help="folder (or FILE.npz for --data npz) of the data")
    s.add_argument("--split", default="test", choices=("train", "test"), help="default test")
    s.add_argument("--n", type=int, default=5000, help="images, a random subset of the split (default 5000)")
    s.add_argument("--method", default="pca", choices=("pca", "tsne"),
                   help="2-D projection of the features (default pca; a 2-D latent is shown as it is)")
    s.add_argument("--k", type=int, default=5, help="neighbours of the k-NN accuracy (default 5)")
    s.add_argument("--seed", type=int, default=0, help="seed of the subset, t-SNE and the CV folds")
    s.add_argument("--out", required=True, help="FILE.png; the coordinates go to FILE.npz beside it")
    s.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = s.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".png":
        raise UsageError(f"--out must end in .png (the coordinates are written beside it as .npz), "
                         f"got {args.out!r}")
    for flag, v, lo in (("--n", args.n, 3), ("--k", args.k, 1), ("--threads", args.threads, 1)):
        if v is not None and v < lo:
            raise UsageError(f"{flag} must be >= {lo}, got {v}")
    if not 0 <= args.seed < 2 ** 32:
        raise UsageError(f"--seed must be in 0..2**32-1, got {args.seed}")

    import numpy as np
    import torch
    from ..apps import embed as em
    from ..data import load_data
    from ..io import atomic_save_npz
    from ..models import Autoencoder
    from ..run import load
    if args.n > em.MAX_POINTS or (args.method == "tsne" and args.n > em.MAX_TSNE):
        raise UsageError(f"--n must be <= {em.MAX_TSNE if args.method == 'tsne' else em.MAX_POINTS:,} "
                         f"for --method {args.method}, got {args.n:,}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.run)
    ds = load_data(args.data, args.data_dir, args.split)
    g = torch.Generator().manual_seed(args.seed)
    index = torch.randperm(len(ds), generator=g)[:args.n].sort().values
    labels = ds.labels[index] if ds.num_classes else None
    m = em.embed(model, ds.images[index], labels, args.method, args.seed)
    report = {"run": str(args.run), "step": model.step, "data": args.data, "split": args.split,
              "n": len(index), "source": m.source, "dim": m.features.shape[1], "method": m.method}
    if m.explained is not None:
        report["explained_variance_ratio"] = [round(float(v), 4) for v in m.explained]
    knn2 = None
    counts = np.bincount(m.labels[m.labels >= 0]) if labels is not None else np.zeros(0, int)
    folds = int(min(5, counts[counts > 0].min())) if (counts > 0).sum() > 1 else 0
    if folds >= 2:                          # stratified CV needs every class in every fold
        k = min(args.k, len(index) - len(index) // folds)   # at most the training fold's size
        knn2 = em.knn_accuracy(m.coords, m.labels, k, folds, args.seed)
        report.update({f"knn{k}_2d": round(knn2, 4), "folds": folds,
                       f"knn{k}_full": round(em.knn_accuracy(m.features, m.labels, k, folds, args.seed), 4)})
    # a 2-D VAE latent is shown as it is, with its decoded manifold beside it
    grid = em.manifold(model) if m.method == "none" and isinstance(model, Autoencoder) else None
    title = f"{model.name} ({Path(args.run).name}, step {model.step:,}): {args.data} {args.split}"
    npz = out.with_suffix(".npz")
    arrays = {"coords": m.coords, "labels": m.labels, "index": index.numpy().astype(np.int64)}
    if m.explained is not None:
        arrays["explained"] = m.explained
    try:
        em.plot_map(m, out, title, grid, knn2)
        atomic_save_npz(npz, **arrays)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}; choose another --out") from None
    report["out"] = [str(out), str(npz)]
    print(json.dumps(report))
