"""`genlab interpolate RUN --out walk.gif|walk.png`: a latent walk (genlab.apps.interpolate) between
random latents, from one class to another (--from-class A --to-class B, conditional runs), or between
two real images through the encoder (--between FILE.npz --index i,j, autoencoder runs)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..registry import UsageError
from .base import Parser, command


def _pair(text: str) -> tuple[int, int]:
    try:
        i, j = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--index must be two image numbers i,j (e.g. 0,1), got {text!r}") from None
    return i, j


@command("interpolate", "latent walks: random, class to class, or between two images (GIF or PNG)")
def interpolate(argv: list[str]) -> None:
    s = Parser(prog="genlab interpolate")
    s.add_argument("run", help="run folder (or a ckpt-XXXXXXXX folder)")
    s.add_argument("--out", required=True, help="FILE.gif (animated, one frame per step) or FILE.png "
                                                "(a grid: rows = walks, columns = steps)")
    s.add_argument("--steps", type=int, default=16, help="frames per walk (2..128, default 16)")
    s.add_argument("--rows", type=int, help="independent walks side by side (1..32, default 1; not with "
                                            "--between, which walks one pair)")
    path = s.add_mutually_exclusive_group()
    path.add_argument("--slerp", dest="path", action="store_const", const="slerp",
                      help="spherical path (default; White 2016)")
    path.add_argument("--lerp", dest="path", action="store_const", const="lerp", help="straight line")
    s.add_argument("--seed", type=int, default=0, help="seed of the random latents (default 0)")
    s.add_argument("--from-class", type=int, help="class at the start (conditional runs; with --to-class)")
    s.add_argument("--to-class", type=int, help="class at the end")
    s.add_argument("--between", help="FILE.npz (uint8 `images`) holding the two images to walk between "
                                     "(autoencoder runs; with --index)")
    s.add_argument("--index", help="i,j: the two images of --between (default 0,1)")
    s.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = s.parse_args(argv)
    out = Path(args.out)
    if out.suffix not in (".gif", ".png"):
        raise UsageError(f"--out must end in .gif (animated) or .png (a grid), got {args.out!r}")
    if (args.from_class is None) != (args.to_class is None):
        raise UsageError("--from-class and --to-class go together: give both")
    if args.from_class is not None and args.between:
        raise UsageError("--from-class/--to-class and --between are two different walks: choose one")
    if args.rows is not None and args.between:
        raise UsageError("--between walks one pair of images (--index i,j): drop --rows")
    if args.index and not args.between:
        raise UsageError("--index picks the images of --between FILE.npz: give --between too")
    if not 0 <= args.seed < 2 ** 63:
        raise UsageError(f"--seed must be in 0..2**63-1, got {args.seed}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    walk_path, rows = args.path or "slerp", 1 if args.rows is None else args.rows

    import torch
    from ..apps import interpolate as ip
    from ..run import load
    ip.check_walk(args.steps, rows)          # before the run is loaded: bad numbers fail fast
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.run)
    g = torch.Generator().manual_seed(args.seed)
    if args.from_class is not None:
        walk = ip.walk_classes(model, args.from_class, args.to_class, args.steps, rows, g)
        if walk.kind == "sweep":   # say so: the user asked for a walk of --steps frames
            print(f"genlab: this model takes whole labels only: the walk is the class sweep "
                  f"{walk.labels.tolist()} at fixed z ({len(walk.labels)} frames)", file=sys.stderr)
    elif args.between:
        walk = ip.walk_between(model, *_images(args.between, args.index or "0,1", model), args.steps,
                               walk_path)
    else:
        walk = ip.walk_random(model, args.steps, rows, walk_path, g)
    try:
        ip.save_walk(walk.frames, out)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}; choose another --out") from None
    print(out)


def _images(npz: str, index: str, model):
    """The two images i, j of an npz as float (1, C, H, W) each, checked against the run's shape."""
    from ..data import read_npz, to_float
    from ..models import Autoencoder
    import torch
    if not isinstance(model, Autoencoder):   # before reading the file: the walk itself needs an encoder
        raise UsageError("--between walks through an encoder: it needs an autoencoder run (vae); "
                         "for a GAN walk between random latents or classes instead")
    if not Path(npz).is_file():
        raise UsageError(f"--between {npz}: no such file")
    x, _ = read_npz(npz)
    i, j = _pair(index)
    for v in (i, j):
        if not 0 <= v < len(x):
            raise UsageError(f"--index {v} is out of range: {npz} holds {len(x)} images (0..{len(x) - 1})")
    if tuple(x.shape[1:]) != tuple(model.shape):
        raise UsageError(f"{npz} holds {x.shape[1:]} images but the run was trained on {tuple(model.shape)}")
    t = to_float(torch.from_numpy(x[[i, j]].copy()))
    return t[:1], t[1:]
